"""What counts as a change of code or library: behaviour digests, import closures, pinned versions."""

from __future__ import annotations

from stages import codehash
from stages.codehash import (
    behaviour_tree,
    imported_modules,
    library_versions,
    module_closure,
    pinned_requirements,
    source_digest,
    third_party_imports,
)
from stages.fingerprint import STAGES
from tests.conftest import ROOT

SOURCE = '''"""Module doc."""
import logging
log = logging.getLogger("x")


def f(x):
    """Doc."""
    log.info("computing %s", x)
    if x:
        log.warning("positive")
    return x + 1  # add
'''


def test_imports_are_found_anywhere_in_a_module():
    source = (
        "import os\nimport stages.io\nfrom stages import cohort, errors\nfrom stages.cache import read_settings\n"
        "import numpy as np\nfrom sklearn.metrics import auc\nfrom . import x\n"
        "def f():\n    from stages.data import sample_loader\n    import stages.models as m\n    import cv2\n"
    )
    assert imported_modules(source) == {"io", "cohort", "errors", "cache", "data", "models"}
    assert third_party_imports(source) == {"numpy", "sklearn", "cv2"}  # os is the standard library


def test_the_digest_ignores_comments_docstrings_formatting_and_log_text():
    reworded = SOURCE.replace("computing %s", "now computing %r").replace("positive", "x > 0").replace("# add", "")
    assert source_digest(reworded) == source_digest(SOURCE)
    assert source_digest(SOURCE.replace('    log.info("computing %s", x)\n', "")) == source_digest(SOURCE)
    assert source_digest(SOURCE) != source_digest(SOURCE.replace("x + 1", "x + 2"))
    assert source_digest(SOURCE) != source_digest(SOURCE.replace("return x + 1", "return 1 + x"))
    assert source_digest(SOURCE) != source_digest(SOURCE.replace("log.warning", "print"))  # not a log call
    # a body left empty by the stripping still parses to the same tree as an explicit pass
    assert source_digest("if x:\n    log.info('a')\n") == source_digest("if x:\n    pass\n")


def test_a_string_statement_after_a_log_call_is_not_taken_for_a_docstring():
    a = "def f():\n    log.info('x')\n    'not a docstring'\n"
    b = "def f():\n    pass\n"
    assert source_digest(a) != source_digest(b)
    assert behaviour_tree  # the function the digest uses is public for tests and benchmarks


def test_closures_follow_imports_transitively_include_the_package_init_and_leave_out_plumbing():
    for stage in STAGES:
        closure = module_closure(stage)
        assert closure == sorted(set(closure)) and stage in closure
        assert "numerics" in closure, "the package __init__ pins the numerics before any stage runs"
        assert not set(closure) & codehash.PLUMBING
    assert {"training", "data", "models", "cache", "cv", "scoring"} <= set(module_closure("train"))
    assert "dicom" not in module_closure("evaluate") and "dicom" in module_closure("predict")


def test_pinned_requirements_are_read_with_their_includes():
    pinned = pinned_requirements(ROOT / "requirements-dev.txt")
    assert {"tensorflow-cpu", "numpy", "pydicom", "opencv-python-headless", "pytest", "ruff"} <= pinned
    assert pinned_requirements() < pinned


def test_libraries_are_the_pinned_ones_a_package_loads_transitively():
    versions = library_versions({"sklearn"}, pinned={"scikit-learn", "scipy", "numpy", "tensorflow-cpu"})
    assert set(versions) == {"python", "scikit-learn", "scipy", "numpy"}  # scipy and numpy through sklearn
    assert versions["python"].count(".") == 1, "major.minor: a patch release changes no wheel"
    versions = library_versions({"pydicom"}, pinned=pinned_requirements())
    assert {"pydicom", "pylibjpeg", "pyjpegls", "pylibjpeg-rle"} <= set(versions), "decoders are plug-ins"
    assert "tensorflow-cpu" not in versions
