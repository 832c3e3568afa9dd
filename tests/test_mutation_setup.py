"""The mutation run's own set-up (tests/MUTATION.md): what makes its kill rates honest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_under_mutmuts_coverage_pass_the_oracle_fixture_is_made_for_every_test():
    """mutmut credits code a fixture runs to the test that set it up: a module fixture would let
    only the first of the oracle tests run against the mutants they all check."""
    env = {**os.environ, "MUTANT_UNDER_TEST": "stats"}
    env.pop("MGMT_UNDER_MUTATION", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:mutation-costs",
            "--setup-only",
            "tests/test_oracles.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    setups = [line.split() for line in proc.stdout.splitlines() if line.strip().startswith("SETUP")]
    scopes = {words[1] for words in setups if words[2] == "fixture"}
    assert proc.returncode == 0 and scopes == {"F"}, proc.stdout[-2000:]


def test_a_fixture_is_built_once_only_for_mutants_of_modules_its_stages_do_not_run(monkeypatch, tmp_path):
    """``built_once``: a ``predict`` mutant reuses the folder the clean run trained (its YAML
    pointing at the new folder), a ``train`` mutant and a run outside mutmut build their own."""
    from tests import mutation_support

    monkeypatch.setattr(mutation_support, "FIXTURES", tmp_path / "cache")
    builds = []

    def build(folder: Path) -> dict:
        builds.append(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "paths.yaml").write_text(f"models: {folder}/models\n")
        (folder / "model.bin").write_bytes(b"weights")
        return {"stderr": "fold 1"}

    def fixture(name: str) -> dict:
        folder = tmp_path / name
        values = mutation_support.built_once("run", stages=("train",), folder=folder, build=build, version="v1")
        assert (folder / "paths.yaml").read_text() == f"models: {folder}/models\n"
        assert (folder / "model.bin").read_bytes() == b"weights" and values == {"stderr": "fold 1"}
        return values

    monkeypatch.delenv("MUTANT_UNDER_TEST", raising=False)
    monkeypatch.delenv("MGMT_UNDER_MUTATION", raising=False)
    fixture("plain")
    assert builds == [tmp_path / "plain"] and not (tmp_path / "cache").exists()
    monkeypatch.setenv("MUTANT_UNDER_TEST", "")  # mutmut's clean run: built, and kept
    fixture("clean")
    monkeypatch.setenv("MUTANT_UNDER_TEST", "stages.predict.x_submission__mutmut_3")
    fixture("predict-mutant")
    assert builds == [tmp_path / "plain", tmp_path / "clean"]
    monkeypatch.setenv("MUTANT_UNDER_TEST", "stages.scoring.x_auc__mutmut_1")  # train runs scoring
    fixture("scoring-mutant")
    assert builds[-1] == tmp_path / "scoring-mutant"


def test_a_mutants_tests_run_cheapest_module_first_each_module_together(monkeypatch, tmp_path):
    from tests import mutation_support

    class Item:
        def __init__(self, nodeid: str) -> None:
            self.nodeid, self.stash = nodeid, {}

    costs = tmp_path / "costs.json"
    costs.write_text('{"a.py": 30.0, "b.py": 0.5}')
    monkeypatch.setattr(mutation_support, "COSTS", costs)
    items = [Item(n) for n in ["a.py::x", "c.py::y", "b.py::z", "a.py::w", "b.py::v"]]
    mutation_support.order_by_cost(items)  # c.py has no recorded cost: last
    assert [i.nodeid for i in items] == ["b.py::z", "b.py::v", "a.py::x", "a.py::w", "c.py::y"]
