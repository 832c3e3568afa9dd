"""Stage fingerprints: every module a stage imports (lazy imports too), by behaviour only."""

from __future__ import annotations

import shutil

from stages.fingerprint import STAGES, fingerprint, imported_modules, module_closure
from tests.conftest import ROOT


def test_imports_are_found_anywhere_in_a_module():
    source = (
        "import os\nimport stages.io\nfrom stages import cohort, errors\nfrom stages.cache import read_settings\n"
        "def f():\n    from stages.data import sample_loader\n    import stages.models as m\n"
    )
    assert imported_modules(source) == {"io", "cohort", "errors", "cache", "data", "models"}


def test_closures_follow_imports_transitively():
    assert module_closure("train") == sorted(set(module_closure("train")))
    assert {"training", "data", "models", "cache", "cv", "scoring"} <= set(module_closure("train"))
    assert "dicom" not in module_closure("evaluate") and "dicom" in module_closure("predict")


def test_a_stage_fingerprint_changes_with_behaviour_of_its_modules_only(tmp_path):
    pkg = tmp_path / "stages"
    shutil.copytree(ROOT / "stages", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    before = {s: fingerprint(s, pkg) for s in STAGES}
    source = (pkg / "cohort.py").read_text()
    (pkg / "cohort.py").write_text(source + "\n# a comment\n")
    assert {s: fingerprint(s, pkg) for s in STAGES} == before
    (pkg / "scoring.py").write_text((pkg / "scoring.py").read_text() + "\nX = 1\n")
    after = {s: fingerprint(s, pkg) for s in STAGES}
    assert {s for s in STAGES if after[s] != before[s]} == {s for s in STAGES if "scoring" in module_closure(s)}
    assert {s for s in STAGES if after[s] != before[s]} == {"train", "evaluate", "predict", "report"}
