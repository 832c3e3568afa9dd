"""Shared fixtures: tiny demo cohorts written with the real generator, settings, stage runners."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stages.challenge import SERIES
from stages.demo import build_cohort
from stages.intensity import Normalisation
from stages.settings import PreprocessSettings
from tests.mutation_support import CostRecorder, built_once, order_by_cost, phase

# mutmut sets MUTANT_UNDER_TEST in every run it makes (its coverage pass, its clean run, each
# mutant's run). Its coverage pass must not reach the stages' subprocesses, which run outside its
# mutants/ folder (the pass keeps its own in-process copy of the setting), so the variable goes and
# MGMT_UNDER_MUTATION says so instead: pytest imports this file as ``conftest`` and the test
# modules import it again as ``tests.conftest``, and the second import must still know.
if os.environ.get("MUTANT_UNDER_TEST") == "stats":
    del os.environ["MUTANT_UNDER_TEST"]
    os.environ["MGMT_UNDER_MUTATION"] = "stats"
UNDER_MUTATION = "MUTANT_UNDER_TEST" in os.environ or "MGMT_UNDER_MUTATION" in os.environ


def per_test_under_mutation(fixture_name: str, config: pytest.Config) -> str:
    """The scope of a module fixture that runs mutated code: one per test under mutmut, which
    credits the code a fixture runs only to the first test that uses it (the others would never
    run against the mutants they check); one per module otherwise."""
    return "function" if UNDER_MUTATION else "module"


def _start_own_fork_server() -> None:
    """mutmut runs each mutant in an ``os.fork()`` of the session, which inherits the record of
    the worker pools' fork server but is not its parent (``waitpid`` fails with ChildProcessError):
    the forked child forgets it and starts its own when it needs a pool."""
    from multiprocessing import forkserver

    forkserver._forkserver._forkserver_pid = None


os.register_at_fork(after_in_child=_start_own_fork_server)


def pytest_configure(config: pytest.Config) -> None:
    if phase() == "stats":
        config.pluginmanager.register(CostRecorder(), "mutation-costs")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if phase() == "mutant":
        order_by_cost(items)


ROOT = Path(__file__).resolve().parents[1]
CONFTEST = Path(__file__).read_text()  # what the fixtures built once under mutmut depend on
TINY = {"n_train": 12, "n_test": 3, "seed": 7, "image_size": 32, "slices": 8, "signal_strength": 1.2, "prevalence": 0.5}
IDENTIFYING = [b"DEMO^PHANTOM", b"DEMO-PID-", b"19000101", b"20000101", b"DEMO PHANTOM INSTITUTE"]


GUARDED = ("dvc.yaml", "dvc.lock", "params.yaml", "paths.yaml")


def _guarded() -> dict[str, bytes | None]:
    return {name: (ROOT / name).read_bytes() if (ROOT / name).exists() else None for name in GUARDED}


PRISTINE = _guarded()  # as the session found them


@pytest.fixture(autouse=True)
def _repository_files_untouched():
    """No test (or fixture) may write the repository's pipeline files (dvclive, for one, adds its
    plots to dvc.yaml unless told not to); the test that finds them changed fails, and they are put
    back for the next one."""
    yield
    changed = [name for name, data in _guarded().items() if data != PRISTINE[name]]
    for name in changed:
        if PRISTINE[name] is None:
            (ROOT / name).unlink()
        else:
            (ROOT / name).write_bytes(PRISTINE[name])
    assert not changed, f"the repository's {', '.join(changed)} changed during this test or its fixtures"


def tree_digest(root: Path) -> dict[str, str]:
    """Content hash of every file under ``root`` by relative path (of ``root`` itself by its name
    when it is a file; nothing when it does not exist)."""
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root] if root.exists() else []
    return {
        (p.relative_to(root).as_posix() if root.is_dir() else p.name): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in files
    }


def make_settings(**changes: object) -> PreprocessSettings:
    """Preprocessing settings for small test images (every slice of the middle half, 16 px)."""
    base = {
        "series": SERIES,
        "orientation": "axial",
        "middle_fraction": 0.5,
        "slice_step": 1,
        "img_size": 16,
        "normalisation": Normalisation("percentile", clip_percentiles=(0.5, 99.5)),
        "blank_level": 0.1,
        "blank_min_fraction": 0.02,
        "window": "middle",
    }
    return PreprocessSettings(**{**base, **changes})  # type: ignore[arg-type]


@pytest.fixture
def settings() -> PreprocessSettings:
    return make_settings()


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12+3 patient demo cohort with every quirk of the default one (do not modify)."""
    root = tmp_path_factory.mktemp("cohort") / "demo"
    build_cohort(out_dir=root, quirks=True, **TINY)
    return root


@pytest.fixture(scope="session")
def clean_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12+3 patient demo cohort without quirks (do not modify)."""
    root = tmp_path_factory.mktemp("clean") / "demo"
    build_cohort(out_dir=root, quirks=False, **TINY)
    return root


def write_config(folder: Path, *, raw_dir: Path | None = None, **sections: dict) -> dict[str, str]:
    """A params.yaml (the repository's, with ``sections`` merged in) and a paths.yaml whose outputs
    all live in ``folder``; returns the environment that points the stages at them."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    if raw_dir is not None:
        params["data"]["raw_dir"] = str(raw_dir)
    for section, values in sections.items():
        params[section].update(values)
    paths = yaml.safe_load((ROOT / "paths.yaml").read_text())
    paths["paths"] = {k: str(folder / v) for k, v in paths["paths"].items()}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (folder / "paths.yaml").write_text(yaml.safe_dump(paths, sort_keys=False))
    return config_env(folder)


def run_stage(name: str, env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m stages.<name>`` in a subprocess, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", f"stages.{name}", *args], env=env, cwd=cwd or ROOT, capture_output=True, text=True
    )


def preprocess_stage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """The ``inventory`` stage, then ``preprocess`` (which reads the inventory's table), as DVC runs them;
    the first that fails, or ``preprocess``."""
    inventory = run_stage("inventory", env)
    return inventory if inventory.returncode else run_stage("preprocess", env, *args)


def config_env(folder: Path) -> dict[str, str]:
    """The environment that points the stages at ``folder``'s params.yaml and paths.yaml."""
    params, paths = folder / "params.yaml", folder / "paths.yaml"
    return {**os.environ, "MGMT_PARAMS": str(params), "MGMT_PATHS": str(paths), "PYTHONPATH": str(ROOT)}


def _training_folder(folder: Path) -> dict:
    raw = folder / "raw"
    build_cohort(out_dir=raw, quirks=False, **{**TINY, "n_train": 40, "n_test": 6})
    env = write_config(
        folder / "run",
        raw_dir=raw,
        preprocess={"img_size": 16, "slice_step": 1},
        model={"name": "seed_cnn", "series": ["T1wCE"]},
        train={"epochs": 2, "early_stopping": "off"},
        cv={"folds": 3},
    )
    for name in ("inventory", "preprocess"):
        proc = run_stage(name, env)
        assert proc.returncode == 0, proc.stderr
    return {}


@pytest.fixture(scope="session")
def training_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A 40-patient cohort, preprocessed by the stage, with params for quick training (seed CNN,
    16 px, 3 folds, 2 epochs); returns the run folder and its environment."""
    folder = tmp_path_factory.mktemp("training")
    stages = ("demo", "inventory", "preprocess")
    built_once("training", stages=stages, folder=folder, build=_training_folder, version=CONFTEST)
    return folder / "run", config_env(folder / "run")


@pytest.fixture(scope="session")
def trained_run(
    training_run: tuple[Path, dict[str, str]],
) -> tuple[Path, dict[str, str], subprocess.CompletedProcess]:
    """:func:`training_run` after the train stage (in its folder); returns the folder, environment
    and train's output."""
    run, env = training_run

    def train(folder: Path) -> dict:
        proc = run_stage("train", config_env(folder / "run"))
        assert proc.returncode == 0, proc.stderr
        return {"args": proc.args, "returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}

    stages = ("demo", "inventory", "preprocess", "train")
    proc = built_once("trained", stages=stages, folder=run.parent, build=train, version=CONFTEST)
    return run, env, subprocess.CompletedProcess(**proc)
