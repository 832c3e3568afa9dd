"""The work of a preprocess pool worker: it starts with the conversion code only."""

from __future__ import annotations

import subprocess
import sys

from stages import convert, preprocess
from tests.conftest import ROOT


def test_a_worker_imports_only_what_converting_needs():
    """Every worker imports its module after the fork; the stage's listing and params code would cost it ~0.5 s."""
    stage_only = ("pandas", "pydantic", "yaml", "sqlite3", "stages.cohort", "stages.inventory", "stages.params")
    imports = "; ".join(f"import {m}" for m in preprocess.WORKER_MODULES)  # what the fork server preloads
    code = f"import sys; {imports}; print(sorted(m for m in {stage_only!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_pool_runs_the_worker_functions_of_this_module():
    """The fork server preloads ``WORKER_MODULES``; the functions the stage hands to the pool must live there."""
    assert preprocess.WORKER_MODULES == ("stages.convert",)
    assert preprocess.work.__module__ in preprocess.WORKER_MODULES
    assert preprocess.init_worker.__module__ in preprocess.WORKER_MODULES
    assert preprocess.work is convert.work and preprocess.init_worker is convert.init_worker
