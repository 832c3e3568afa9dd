"""The README's model table script: a recorded result is reused only for exactly its parameters, and
the gap to Bayes is the paired bootstrap the README describes."""

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


def _write_seed_runs(*, n: int = 40, seeds: tuple[int, ...] = (42, 1, 2)):  # noqa: ANN202
    """Under ``model_table.OUT``: a demo folder's oracle and one out-of-fold patient table per CV seed."""
    import numpy as np
    import pandas as pd

    from stages.cohort import ORACLE_FILE

    rng = np.random.default_rng(5)
    ids = [f"{i:05d}" for i in range(1, n + 1)]
    labels = np.tile([0, 1], n // 2)
    oracle = labels + rng.normal(0, 1, n)
    raw = model_table.demo_path(model_table.params_with({}), permuted=False)  # the CV seed is not demo's
    raw.mkdir(parents=True)
    pd.DataFrame({"BraTS21ID": ids, "score": oracle}).to_csv(raw / ORACLE_FILE, index=False)
    records, scores = [], []
    for seed in seeds:
        params = model_table.params_with({"cv.seed": seed})
        score = labels * 0.3 + rng.normal(0, 1, n)
        table = pd.DataFrame({"repeat": 0, "fold": np.arange(n) % 5, "BraTS21ID": ids, "MGMT_value": labels})
        for column in ("raw", "rank", "calibrated"):
            table[column] = score
        folder = model_table.run_dir(raw, params) / "oof"
        folder.mkdir(parents=True)
        table.to_csv(folder / "oof_patients.csv", index=False)
        auc = {"bayes_auc": roc_auc(labels, oracle), "patient_auc": roc_auc(labels, score)}
        records.append({"row": "cnn3d", "params": params.model_dump(mode="json"), **auc})
        scores.append(score)
    return records, labels, oracle, np.array(scores)


def roc_auc(labels, scores) -> float:  # noqa: ANN001
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def test_the_gap_to_bayes_is_a_paired_bootstrap_over_patients_with_the_seeds_as_repeats(tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.setattr(model_table, "OUT", tmp_path)
    records, labels, oracle, scores = _write_seed_runs()
    gap, lo, hi = model_table.seeds_gap(records)

    assert gap == np.mean([roc_auc(labels, oracle) - roc_auc(labels, s) for s in scores])
    # independently: the same patients drawn for the oracle and for every seed (whose AUCs are
    # averaged), each AUC the share of (positive, negative) pairs ranked right, ties counting half
    draws = np.random.default_rng(0).integers(0, len(labels), (2000, len(labels)))
    y = labels[draws]
    pairs = y[:, :, None] * (1 - y[:, None, :])

    def pair_auc(s):  # noqa: ANN001, ANN202
        d = s[draws][:, :, None] - s[draws][:, None, :]
        return (((d > 0) + 0.5 * (d == 0)) * pairs).sum(axis=(1, 2)) / pairs.sum(axis=(1, 2))

    diffs = pair_auc(oracle) - np.mean([pair_auc(s) for s in scores], axis=0)
    assert np.allclose((lo, hi), np.nanpercentile(diffs, [2.5, 97.5]), rtol=0, atol=1e-12)
    assert lo < gap < hi


def test_the_gap_is_not_given_when_a_seeds_run_has_no_outputs(tmp_path, monkeypatch):
    monkeypatch.setattr(model_table, "OUT", tmp_path)
    records, *_ = _write_seed_runs()
    next(tmp_path.glob("runs/*/oof/oof_patients.csv")).unlink()
    assert model_table.seeds_gap(records) is None


def test_the_gap_is_not_given_without_a_latent_score(tmp_path, monkeypatch):
    from stages.cohort import ORACLE_FILE

    monkeypatch.setattr(model_table, "OUT", tmp_path)
    records, *_ = _write_seed_runs()
    next(tmp_path.glob(f"demo_*/{ORACLE_FILE}")).unlink()
    assert model_table.seeds_gap(records) is None
