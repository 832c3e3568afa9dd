"""Stage fingerprints: a stage reruns when the behaviour of a module it runs, or the version of a
pinned library it loads, changes, and for nothing else."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
from pathlib import Path

import pytest

from stages import codehash
from stages.codehash import module_closure
from stages.fingerprint import STAGES, changes, fingerprint
from tests.conftest import ROOT


@pytest.fixture
def pkg(tmp_path: Path) -> Path:
    path = tmp_path / "stages"
    shutil.copytree(ROOT / "stages", path, ignore=shutil.ignore_patterns("__pycache__"))
    return path


def changed_stages(pkg: Path, module: str, edit) -> set[str]:
    before = {s: fingerprint(s, pkg) for s in STAGES}
    (pkg / f"{module}.py").write_text(edit((pkg / f"{module}.py").read_text()))
    after = {s: fingerprint(s, pkg) for s in STAGES}
    return {s for s in STAGES if after[s] != before[s]}


def test_a_comment_reruns_nothing(pkg):
    assert changed_stages(pkg, "cohort", lambda s: s + "\n# a comment\n") == set()


def test_a_behavioural_edit_reruns_exactly_the_stages_that_run_the_module(pkg):
    assert changed_stages(pkg, "scoring", lambda s: s + "\nX = 1\n") == {"train", "evaluate", "predict", "report"}
    assert {s for s in STAGES if "scoring" in module_closure(s)} == {"train", "evaluate", "predict", "report"}


def test_an_edit_to_a_models_code_retrains(pkg):
    edit = lambda s: s.replace("layers.Dropout(0.3)(x)", "layers.Dropout(0.4)(x)", 1)  # noqa: E731
    assert changed_stages(pkg, "models", edit) == {"train"}  # predict reruns through the models it reads


def test_a_new_helper_in_the_command_line_module_retrains_nothing(pkg):
    helper = "\n\ndef quiet_more() -> None:\n    logging.getLogger('numba').setLevel(logging.ERROR)\n"
    assert changed_stages(pkg, "cli", lambda s: s + helper) == set()


def test_a_log_text_edit_reruns_nothing(pkg):
    edit = lambda s: s.replace('"%s: %d fit / %d val', '"%s: %d fitted / %d validation', 1)  # noqa: E731
    assert "%d fit / %d val" in (pkg / "train.py").read_text()
    assert changed_stages(pkg, "train", edit) == set()
    edit = lambda s: s.replace("converted %d (%d files)", "built %d entries (%d files)", 1)  # noqa: E731
    assert "converted %d (%d files)" in (pkg / "preprocess.py").read_text()
    assert changed_stages(pkg, "preprocess", edit) == set()


def test_the_numerical_environment_counts_for_every_stage(pkg):
    assert changed_stages(pkg, "numerics", lambda s: s.replace('"AVX2"', '"AVX512_CORE"', 1)) == set(STAGES)


@pytest.mark.parametrize(
    ("library", "stages"),
    [
        ("tensorflow-cpu", {"train", "predict"}),
        ("matplotlib", {"report"}),
        ("xxhash", {"inventory", "preprocess"}),
        ("opencv-python-headless", {"preprocess", "predict"}),
        ("pydicom", {"demo", "preprocess", "predict"}),
        ("dvclive", {"evaluate", "report"}),
    ],
)
def test_a_library_upgrade_reruns_exactly_the_stages_that_load_it(monkeypatch, library, stages):
    before = {s: fingerprint(s) for s in STAGES}
    real = importlib.metadata.version
    monkeypatch.setattr(codehash.importlib.metadata, "version", lambda d: "99.0" if d == library else real(d))
    after = {s: fingerprint(s) for s in STAGES}
    assert {s for s in STAGES if after[s] != before[s]} == stages
    assert all(changes(before[s], after[s]) == [library] for s in stages)


def test_changes_names_modules_and_libraries():
    old = "module a 1\nmodule b 2\nlibrary numpy 2.4\n"
    new = "module a 1\nmodule b 3\nlibrary numpy 2.5\nmodule c 4\n"
    assert changes(old, new) == ["b", "c", "numpy"]


def test_a_new_module_and_the_library_it_loads_join_the_fingerprint_of_the_stage_that_imports_it(pkg):
    """Read from the package given (not the installed one): one line per module and library."""
    (pkg / "newmod.py").write_text("import xxhash\n\nX = xxhash.xxh64\n")
    evaluate = pkg / "evaluate.py"
    evaluate.write_text(evaluate.read_text() + "\nfrom stages import newmod  # noqa: E402,F401\n")
    text = fingerprint("evaluate", pkg)
    lines = text.splitlines()
    assert text.endswith("\n") and all(re.fullmatch(r"(module|library) \S+ \S+", line) for line in lines), text
    assert any(line.startswith("module newmod ") for line in lines)
    assert f"library xxhash {importlib.metadata.version('xxhash')}" in lines
    assert "library xxhash" not in fingerprint("evaluate")  # the installed package: evaluate loads no xxhash
