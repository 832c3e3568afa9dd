"""The train stage: no held-out patient ever trains or stops its model, byte-stable models, quiet logs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from stages import train, training
from stages.card import read_card
from stages.cohort import read_patients
from stages.cv import Split
from stages.params import load_params, load_paths
from tests.conftest import ROOT, run_stage, tree_digest, write_config

TF_NOISE = ("oneDNN", "absl", "I0000", "E0000", "W0000", "cuda", "TensorFlow binary", "rebuild TensorFlow")


def test_the_stage_writes_models_predictions_and_logs(trained_run):
    folder, _, proc = trained_run
    assert sorted(p.name for p in (folder / "models").iterdir()) == [
        "model_card.json",
        "repeat0_fold0.keras",
        "repeat0_fold1.keras",
        "repeat0_fold2.keras",
    ]
    patients = pd.read_csv(folder / "predictions/oof_patients.csv", dtype={"BraTS21ID": str})
    table = read_patients(folder / "data/patients.csv")
    train_ids = table.loc[(table["split"] == "train") & (table["T1wCE"].astype(int) > 0), "BraTS21ID"]
    assert sorted(patients["BraTS21ID"]) == sorted(train_ids), "every training patient scored once"
    labels = table[table["split"] == "train"].set_index("BraTS21ID")["MGMT_value"].astype(int)
    assert patients.set_index("BraTS21ID")["MGMT_value"].to_dict() == labels.loc[patients["BraTS21ID"]].to_dict()
    card = json.loads((folder / "models/model_card.json").read_text())
    assert card["preprocess"]["img_size"] == 16 and card["input_kind"] == "slices" and len(card["models"]) == 3
    curves = pd.read_csv(folder / "training/curves.csv")
    assert len(curves) == 3 * 2 and set(curves.columns) >= {"fold", "epoch", "loss", "val_loss", "val_patient_auc"}


def test_stderr_holds_one_line_per_fold_and_no_tensorflow_noise(trained_run):
    _, _, proc = trained_run
    lines = proc.stderr.strip().splitlines()
    assert [line.split(":")[1].strip() for line in lines[:3]] == ["repeat0_fold0", "repeat0_fold1", "repeat0_fold2"]
    assert len(lines) == 4 and lines[-1].startswith("train: trained 3 models")
    for word in TF_NOISE:
        assert word not in proc.stderr, word


@pytest.mark.slow  # retrains: CI's slow run
def test_models_are_byte_identical_when_trained_again(trained_run, tmp_path):
    folder, env, _ = trained_run
    before = tree_digest(folder / "models")
    paths = yaml.safe_load((folder / "paths.yaml").read_text())
    paths["paths"]["models_dir"] = str(tmp_path / "models")
    (tmp_path / "paths.yaml").write_text(yaml.safe_dump(paths))
    assert run_stage("train", {**env, "MGMT_PATHS": str(tmp_path / "paths.yaml")}).returncode == 0
    assert tree_digest(tmp_path / "models") == before


def test_no_held_out_patient_trains_or_stops_its_model(training_run, monkeypatch, tmp_path):
    folder, _ = training_run
    params, paths = load_params(folder / "params.yaml"), load_paths(folder / "paths.yaml")
    seen = []
    real = training.fit_fold

    def spy(data, **kwargs):
        seen.append((kwargs["name"], {p.stem for p in data.fit_paths}, {p.stem for p in data.val_paths}))
        return real(data, **kwargs)

    monkeypatch.setattr(training, "fit_fold", spy)
    cohort = train.prepare(params, paths)
    small = params.model_copy(update={"train": params.train.model_copy(update={"epochs": 1})})
    out = train.cross_validate(cohort, small, models_dir=tmp_path / "models_dir")
    held = pd.DataFrame(out.patients)
    assert len(seen) == 3
    for k, (name, fit, val) in enumerate(seen):
        test = set(held.loc[held["fold"] == k, "BraTS21ID"])
        assert name == f"repeat0_fold{k}" and test and not (fit | val) & test and not fit & val
        assert fit | val | test == set(cohort.ids)

    # what the stage writes is exactly what was gathered, and the card describes the cohort
    written = paths.model_copy(update={name: str(tmp_path / name) for name in ("oof", "training_log", "models_dir")})
    train.write_outputs(out, cohort=cohort, params=small, paths=written)
    keys = ["repeat", "fold", "BraTS21ID", "MGMT_value"]
    for name, rows, columns in (
        ("oof/oof_patients.csv", out.patients, [*keys, "raw", "rank", "calibrated"]),
        ("oof/oof_slices.csv", out.slices, [*keys, "sample", "prob"]),
        ("training_log/curves.csv", out.curves, ["repeat", "fold", "epoch", "loss", "val_loss", "val_patient_auc"]),
    ):
        table = pd.read_csv(tmp_path / name, dtype={"BraTS21ID": str})
        assert list(table.columns) == columns, name
        pd.testing.assert_frame_equal(table, pd.DataFrame(rows)[columns], check_dtype=False, rtol=0, atol=1e-12)
    assert json.loads((tmp_path / "training_log/folds.json").read_text()) == out.folds
    card, files = read_card(tmp_path / "models_dir")
    assert card.train_prevalence == pytest.approx(cohort.labels.mean()) and card.train_patients == len(cohort.ids)
    assert card.models == tuple(out.models) and [f.name for f in files] == [m.file for m in out.models]
    assert card.model == small.model and card.input_kind == cohort.kind and card.preprocess == cohort.settings


def test_too_many_folds_for_the_cohort_is_one_line(training_run, tmp_path):
    folder, env = training_run
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["cv"]["folds"] = 30
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run_stage("train", {**env, "MGMT_PARAMS": str(tmp_path / "params.yaml")})
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "cv.folds: 30 is not allowed: more folds than patients of the smaller class" in proc.stderr


def test_on_a_terminal_each_fold_shows_a_progress_bar(training_run, tmp_path):
    """Behind the filter that hides TensorFlow's notices, stderr is a pipe: the bar must still show."""
    import os
    import pty
    import subprocess
    import sys

    folder, env = training_run
    env = write_config(
        tmp_path / "run",
        raw_dir=Path(yaml.safe_load((folder / "params.yaml").read_text())["data"]["raw_dir"]),
        model={"name": "seed_cnn", "series": ["T1wCE"]},
        train={"epochs": 2, "early_stopping": "off"},
        cv={"folds": 2},
    )
    (tmp_path / "run/data").mkdir(exist_ok=True)
    os.symlink(folder / "data/cache", tmp_path / "run/data/cache")
    os.symlink(folder / "data/patients.csv", tmp_path / "run/data/patients.csv")
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stages.train"], cwd=ROOT, env=env, stdin=follower, stdout=follower, stderr=follower
    )
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        shown += chunk
    assert proc.wait() == 0, shown.decode(errors="replace")[-2000:]
    text = shown.decode(errors="replace")
    for fold in ("repeat0_fold0", "repeat0_fold1"):
        assert f"train {fold}:" in text and "epoch" in text, text[-2000:]  # the bar: "train repeat0_fold0: 50%|..."
    assert "val patient AUC" in text and "oneDNN" not in text


def test_held_out_labels_reach_nothing_but_the_final_score(training_run, monkeypatch, tmp_path):
    """Flip the labels of one fold's held-out patients: the model, its calibration and every score it
    gives are bit-identical; only the recorded labels and the held-out AUC may change."""
    from dataclasses import replace

    from stages.cv import splits

    folder, _ = training_run
    params, paths = load_params(folder / "params.yaml"), load_paths(folder / "paths.yaml")
    params = params.model_copy(update={"train": params.train.model_copy(update={"epochs": 1})})
    cohort = train.prepare(params, paths)
    cv = params.cv
    first = next(splits(cohort.labels, cohort.ids, folds=cv.folds, seed=cv.seed, repeats=1, val_fraction=0.2))
    monkeypatch.setattr(train, "splits", lambda *args, **kwargs: iter([first]))  # the same patients both times
    flipped = cohort.labels.copy()
    flipped[first.test] = 1 - flipped[first.test]
    a = train.cross_validate(cohort, params, models_dir=tmp_path / "a")
    b = train.cross_validate(replace(cohort, labels=flipped), params, models_dir=tmp_path / "b")
    import keras
    import numpy as np

    weights = [
        keras.models.load_model(d / "repeat0_fold0.keras").get_weights() for d in (tmp_path / "a", tmp_path / "b")
    ]
    assert all(np.array_equal(x, y) for x, y in zip(*weights))  # (the files differ in Keras's layer names)
    assert [m.calibration for m in a.models] == [m.calibration for m in b.models]
    scores = ["raw", "rank", "calibrated"]
    assert [[p[k] for k in scores] for p in a.patients] == [[p[k] for k in scores] for p in b.patients]
    assert [s["prob"] for s in a.slices] == [s["prob"] for s in b.slices]
    assert a.curves == b.curves
    assert [p["MGMT_value"] for p in a.patients] != [p["MGMT_value"] for p in b.patients]


def test_each_folds_summary_records_its_patients_training_and_held_out_auc():
    split = Split(repeat=1, fold=2, fit=np.arange(7), val=np.arange(3), test=np.arange(4))
    history = [{"epoch": e} for e in range(1, 6)]
    result = training.FoldResult(
        model=None,
        val_scores=np.zeros(3),
        history=history,
        stopped_at=5,
        best_epoch=2,
        collapsed=True,
        attempts=2,
        seed=7,
    )
    assert train.fold_summary(split, result, 0.625) == {
        "patients": {"fit": 7, "val": 3, "held_out": 4},
        "epochs": 5,
        "stopped_at": 5,
        "best_epoch": 2,
        "collapsed": True,
        "attempts": 2,
        "seed": 7,
        "held_out_patient_auc_raw": 0.625,
    }


def test_every_held_out_patient_epoch_and_fold_is_recorded_and_each_fold_auc_is_its_patients(trained_run):
    """The train stage's records, each against what it must hold: every eligible training patient
    held out once per repeat with its slices numbered from 0; each fold's curve one row per epoch;
    each fold's summary its patient counts and its held-out AUC, recomputed with scikit-learn
    from that fold's raw patient scores."""
    from sklearn.metrics import roc_auc_score

    folder, _, _ = trained_run
    params = load_params(folder / "params.yaml")
    table = pd.read_csv(folder / "data/patients.csv", dtype={"BraTS21ID": str}, keep_default_na=False)
    train_ids = sorted(table.loc[(table["split"] == "train") & (table["T1wCE"].astype(int) > 0), "BraTS21ID"])
    patients = pd.read_csv(folder / "predictions/oof_patients.csv", dtype={"BraTS21ID": str})
    slices = pd.read_csv(folder / "predictions/oof_slices.csv", dtype={"BraTS21ID": str})
    curves = pd.read_csv(folder / "training/curves.csv")
    folds = json.loads((folder / "training/folds.json").read_text())
    assert sorted(patients["BraTS21ID"]) == train_ids
    for pid, rows in slices.groupby("BraTS21ID"):
        assert rows["sample"].tolist() == list(range(len(rows))), pid
    assert sorted(slices["BraTS21ID"].unique()) == train_ids
    assert sorted(folds) == [f"repeat0_fold{k}" for k in range(params.cv.folds)]
    for (repeat, fold), rows in patients.groupby(["repeat", "fold"]):
        summary = folds[f"repeat{repeat}_fold{fold}"]
        epochs = curves[(curves["repeat"] == repeat) & (curves["fold"] == fold)]["epoch"].tolist()
        assert epochs == list(range(1, params.train.epochs + 1))
        assert summary["patients"]["held_out"] == len(rows)
        assert summary["patients"]["fit"] + summary["patients"]["val"] + len(rows) == len(train_ids)
        assert summary["held_out_patient_auc_raw"] == pytest.approx(roc_auc_score(rows["MGMT_value"], rows["raw"]))


def test_a_model_series_the_cache_lacks_is_one_line_naming_the_key(training_run, tmp_path):
    from stages import train
    from stages.cache import CONFIG_FILE
    from stages.errors import ParamError

    folder, _ = training_run
    paths = load_paths(folder / "paths.yaml")
    config = json.loads((Path(paths.cache_dir) / CONFIG_FILE).read_text())
    config["settings"]["series"] = ["T1w", "T1wCE"]
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    params = load_params(folder / "params.yaml")
    params = params.model_copy(update={"model": params.model.model_copy(update={"series": ("FLAIR", "T1wCE")})})
    with pytest.raises(ParamError) as error:
        train.prepare(params, paths.model_copy(update={"cache_dir": str(tmp_path)}))
    assert error.value.key == "model.series"
    assert str(error.value) == "model.series: ['FLAIR'] not in the preprocessed cache (series ['T1w', 'T1wCE'])"


def test_a_per_slice_models_cohort_counts_every_cached_slice_of_each_patient(training_run):
    """``prepare``: the seed CNN's samples are a patient's slices (they set the steps of an epoch)."""
    from stages import train

    folder, _ = training_run
    params, paths = load_params(folder / "params.yaml"), load_paths(folder / "paths.yaml")
    cohort = train.prepare(params, paths)
    table = pd.read_csv(paths.patients, dtype=str, keep_default_na=False).set_index("BraTS21ID")
    assert params.model.name == "seed_cnn" and cohort.kind == "slices"
    assert cohort.samples.tolist() == [int(table.loc[pid, "T1wCE"]) for pid in cohort.ids]
    assert cohort.samples.min() > 1
