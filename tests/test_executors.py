"""Where training runs: this process or Ray tasks give the same bits, and a failing task is named."""

from __future__ import annotations

import os
import shutil

import pytest
import yaml

from stages.errors import DataError
from stages.executors import run_tasks
from tests.conftest import run_stage, tree_digest


def test_local_tasks_run_in_order_and_are_logged_as_they_finish():
    seen = []
    assert run_tasks(str.upper, ["a", "b"], names=["1", "2"], executor="local", log=seen.append) == ["A", "B"]
    assert seen == ["A", "B"]
    with pytest.raises(ValueError, match="unknown executor"):
        run_tasks(str.upper, ["a"], names=["1"], executor="nowhere", log=print)


def need_ray() -> None:
    """Ray comes with requirements-cluster.txt: CI installs it, elsewhere these tests are skipped."""
    if os.environ.get("CI"):
        import ray  # noqa: F401 - must be installed in CI
    else:
        pytest.importorskip("ray")


@pytest.mark.slow
def test_a_failing_or_dying_task_stops_the_run_with_one_line_naming_it():
    need_ray()
    logged = []
    with pytest.raises(DataError, match=r"^b: failed on the Ray cluster: ValueError: invalid literal"):
        run_tasks(int, ["1", "x", "3"], names=["a", "b", "c"], executor="ray", log=logged.append)
    assert logged == [1]
    with pytest.raises(DataError, match=r"^fold: failed on the Ray cluster: .*(died|crash|exit)"):
        run_tasks(os._exit, [3], names=["fold"], executor="ray", log=print)


@pytest.mark.slow
def test_training_on_ray_gives_the_same_bits_as_training_here(trained_run, tmp_path):
    need_ray()
    folder, env, local = trained_run
    there = tmp_path / "ray"
    shutil.copytree(folder, there, ignore=shutil.ignore_patterns("models", "predictions", "training"))
    paths = yaml.safe_load((there / "paths.yaml").read_text())
    paths["paths"] = {k: v.replace(str(folder), str(there)) for k, v in paths["paths"].items()}
    (there / "paths.yaml").write_text(yaml.safe_dump(paths))
    params = yaml.safe_load((there / "params.yaml").read_text())
    params["train"]["executor"] = "ray"
    (there / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = run_stage(
        "train", {**env, "MGMT_PARAMS": str(there / "params.yaml"), "MGMT_PATHS": str(there / "paths.yaml")}
    )
    assert proc.returncode == 0, proc.stderr
    assert [line for line in proc.stderr.splitlines() if not line.startswith("train: ")] == []
    assert proc.stderr.count("train: repeat0_fold") == local.stderr.count("train: repeat0_fold") == 3
    for out in ("models", "predictions", "training"):
        assert tree_digest(there / out) == tree_digest(folder / out), out
