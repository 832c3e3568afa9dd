"""The CI reproducibility comparison flags changed outputs and ignores timestamped models."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

spec = importlib.util.spec_from_file_location("reproduce", Path(__file__).resolve().parents[1] / ".ci/reproduce.py")
reproduce = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reproduce)


def lock(**md5: str) -> str:
    outs = [{"path": path.replace("__", "/"), "md5": value} for path, value in md5.items()]
    return yaml.safe_dump({"schema": "2.0", "stages": {"train": {"cmd": "x", "outs": outs}}})


def test_identical_locks_pass():
    assert (
        reproduce.lock_differences(lock(models="a", predictions__oof="b"), lock(models="a", predictions__oof="b")) == []
    )


def test_a_nondeterministic_data_output_fails():
    assert reproduce.lock_differences(lock(predictions__oof="b"), lock(predictions__oof="c")) == [
        "train:predictions/oof"
    ]


def test_model_timestamps_are_ignored_but_missing_outputs_are_not():
    assert reproduce.lock_differences(lock(models="a", x="1"), lock(models="z", x="1")) == []
    assert reproduce.lock_differences(lock(x="1"), lock(x="1", y="2")) == ["train:y"]
