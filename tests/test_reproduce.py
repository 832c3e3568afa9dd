"""The CI reproducibility comparison: any changed output fails it, models included."""

from __future__ import annotations

import importlib.util

import yaml

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("reproduce", ROOT / ".ci/reproduce.py")
reproduce = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reproduce)


def lock(**md5: str) -> str:
    outs = [{"path": path.replace("__", "/"), "md5": value} for path, value in md5.items()]
    return yaml.safe_dump({"schema": "2.0", "stages": {"train": {"cmd": "x", "outs": outs}}})


def test_identical_locks_pass():
    assert reproduce.lock_differences(lock(models="a", predictions="b"), lock(models="a", predictions="b")) == []


def test_any_changed_or_missing_output_fails_models_included():
    assert reproduce.lock_differences(lock(predictions="b"), lock(predictions="c")) == ["train:predictions"]
    assert reproduce.lock_differences(lock(models="a", x="1"), lock(models="z", x="1")) == ["train:models"]
    assert reproduce.lock_differences(lock(x="1"), lock(x="1", y="2")) == ["train:y"]


def test_only_the_always_run_stages_may_show_in_dvc_status():
    assert reproduce.status_problems('{"inventory": ["always changed"]}') == {}
    assert reproduce.status_problems("{}") == {}
    changed = '{"inventory": ["always changed"], "train": [{"changed deps": {"data/cache": "modified"}}]}'
    assert list(reproduce.status_problems(changed)) == ["train"]
