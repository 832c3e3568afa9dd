"""The README's model table script: a recorded result is reused only for exactly its parameters."""

from __future__ import annotations

import importlib.util

import yaml

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("model_table", ROOT / "scripts/model_table.py")
model_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(model_table)


def test_a_result_is_keyed_by_every_parameter_not_only_the_rows_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(model_table, "ROOT", tmp_path)
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    changes = {"model.name": "cnn3d", "cv.seed": 1}
    keys = []
    for epochs in (30, 30, 20):  # an edit to params.yaml that the row's changes do not mention
        data["train"]["epochs"] = epochs
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
        keys.append(model_table.cell_key(model_table.params_with(changes), permuted=False))
    assert keys[0] == keys[1] != keys[2]
    assert model_table.cell_key(model_table.params_with(changes), permuted=True) != keys[2]
