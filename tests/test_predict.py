"""Predictions: the submission matched by ID, the CLI's table agreeing with it, broken inputs in one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stages.card import read_card
from stages.errors import DataError
from stages.params import load_params
from tests.conftest import run_stage


@pytest.fixture(scope="module")
def predicted(trained_run):
    folder, env, _ = trained_run
    proc = run_stage("predict", env)
    assert proc.returncode == 0, proc.stderr
    return folder, env


def test_the_submission_covers_the_sample_by_id_unrounded(predicted):
    folder, _ = predicted
    raw = folder.parent / "raw"
    sub = pd.read_csv(folder / "submission.csv", dtype={"BraTS21ID": str})
    sample = pd.read_csv(raw / "sample_submission.csv", dtype={"BraTS21ID": str})
    assert list(sub.columns) == ["BraTS21ID", "MGMT_value"]
    assert sorted(sub["BraTS21ID"]) == sorted(sample["BraTS21ID"]) and sub["BraTS21ID"].is_unique
    assert sub["MGMT_value"].between(0, 1).all() and sub["MGMT_value"].nunique() > 1
    assert not np.allclose(sub["MGMT_value"] * 10, np.round(sub["MGMT_value"] * 10)), "not rounded to 0.1"


def test_the_cli_table_agrees_with_the_submission_patient_by_patient(predicted, tmp_path):
    folder, env = predicted
    raw = folder.parent / "raw"
    sub = pd.read_csv(folder / "submission.csv", dtype={"BraTS21ID": str}).set_index("BraTS21ID")["MGMT_value"]
    ids = sorted(sub.index)
    proc = run_stage(
        "predict",
        env,
        "--patient",
        str(raw / "test" / ids[2]),
        "--patients-dir",
        str(raw / "test"),
        "--csv",
        str(tmp_path / "out.csv"),
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "BraTS21ID percentile", "rank pooling: a percentile among validation patients"
    rows = [line.split() for line in lines[1:]]
    assert [r[0] for r in rows] == [ids[2], *ids]
    for pid, value in rows:
        assert float(value) == pytest.approx(sub[pid], abs=1e-6), pid
    table = pd.read_csv(tmp_path / "out.csv", dtype={"BraTS21ID": str})
    assert table["BraTS21ID"].tolist() == [ids[2], *ids] and "percentile" in table.columns


def test_broken_and_missing_folders_are_one_line_errors(predicted, tmp_path):
    _, env = predicted
    broken = tmp_path / "00999"
    (broken / "T1wCE").mkdir(parents=True)
    (broken / "T1wCE" / "Image-1.dcm").write_bytes(b"not a dicom file")
    proc = run_stage("predict", env, "--patient", str(broken))
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("predict: ") and "00999" in proc.stderr and "no usable slices" in proc.stderr
    proc = run_stage("predict", env, "--patient", str(tmp_path / "nowhere"))
    assert proc.returncode == 1 and proc.stderr.strip() == f"predict: {tmp_path / 'nowhere'}: not a patient folder"


def test_a_patient_without_slices_among_others_gets_the_neutral_score(predicted, tmp_path):
    folder, env = predicted
    good = sorted((folder.parent / "raw" / "test").iterdir())[0]
    shutil.copytree(good, tmp_path / good.name)
    (tmp_path / "00999" / "T1wCE").mkdir(parents=True)
    proc = run_stage("predict", env, "--patients-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    card, _ = read_card(folder / "models")
    pooling = load_params(folder / "params.yaml").cv.pooling
    assert last.startswith(f"00999 {card.neutral_score(pooling):.6f}") and "no usable slices" in last


def test_model_cards_and_files_are_checked(predicted, tmp_path):
    folder, _ = predicted
    with pytest.raises(DataError, match="model card not found"):
        read_card(tmp_path)
    card, files = read_card(folder / "models" / "repeat0_fold1.keras")
    assert [m.file for m in card.models] == ["repeat0_fold1.keras"] and len(files) == 1
    assert card.neutral_score("rank") == 0.5 and card.neutral_score("raw") == card.train_prevalence


def test_each_test_patients_score_is_its_mean_over_the_fold_models_matched_by_id(predicted, tmp_path):
    """``predict.execute`` in this process against the promise: a test patient's score is the
    mean over the fold models of that model's pooled patient score (each fold's own calibration,
    ``cv.pooling``), matched to the patient's ID, and the report counts what it says."""
    import keras

    from stages import predict
    from stages.cache import entry_path
    from stages.data import patient_scores, predict_samples, sample_loader
    from stages.params import load_paths

    folder, _ = predicted
    params, paths = load_params(folder / "params.yaml"), load_paths(folder / "paths.yaml")
    paths = paths.model_copy(
        update={"submission": str(tmp_path / "submission.csv"), "predict_report": str(tmp_path / "report.json")}
    )
    report = predict.execute(params, paths)

    card, files = read_card(folder / "models")
    table = pd.read_csv(paths.patients, dtype={"BraTS21ID": str})
    ids = list(table.loc[table["split"] == "test", "BraTS21ID"])
    load = sample_loader(kind=card.input_kind, series=card.model.series, depth=card.model.depth)
    samples = [load(entry_path(Path(paths.cache_dir), f"test/{pid}")) for pid in ids]
    per_model = []
    for f, entry in zip(files, card.models, strict=True):
        model = keras.models.load_model(f, compile=False)
        raw = patient_scores(predict_samples(model, samples, batch_size=64))
        per_model.append(entry.calibration.apply(raw)[params.cv.pooling])
    expected = pd.Series(np.mean(per_model, axis=0), index=ids)

    got = pd.read_csv(tmp_path / "submission.csv", dtype={"BraTS21ID": str}).set_index("BraTS21ID")["MGMT_value"]
    by_cli = pd.read_csv(folder / "submission.csv", dtype={"BraTS21ID": str}).set_index("BraTS21ID")["MGMT_value"]
    assert sorted(got.index) == sorted(ids)
    np.testing.assert_allclose(got.loc[ids], expected.loc[ids], rtol=0, atol=1e-6)
    np.testing.assert_allclose(by_cli.loc[ids], expected.loc[ids], rtol=0, atol=1e-6)
    assert report == {
        "patients": len(ids),
        "models": len(files),
        "pooling": params.cv.pooling,
        "neutral_score": card.neutral_score(params.cv.pooling),
        "patients_without_slices": [],
    }


def test_raw_folders_score_as_their_cached_selves_and_an_empty_one_gets_the_neutral_score(predicted, tmp_path):
    """``predict.patient_folders`` and ``predict_folders`` in this process: each raw test folder,
    preprocessed from DICOM as the cache was, scores what the submission (from the cache) says for
    that ID; a folder without usable slices gets the neutral score and says why."""
    from stages import predict

    folder, _ = predicted
    raw_test = folder.parent / "raw" / "test"
    empty = tmp_path / "00999"
    (empty / "T1wCE").mkdir(parents=True)
    folders = predict.patient_folders([empty], raw_test)
    ids = sorted(p.name for p in raw_test.iterdir() if p.is_dir())
    assert [f.name for f in folders] == ["00999", *ids]
    card, files = read_card(folder / "models")
    pooling = load_params(folder / "params.yaml").cv.pooling
    rows = predict.predict_folders(folders, card=card, files=files, pooling=pooling)
    sub = pd.read_csv(folder / "submission.csv", dtype={"BraTS21ID": str}).set_index("BraTS21ID")["MGMT_value"]
    assert rows[0]["BraTS21ID"] == "00999" and rows[0]["score"] == card.neutral_score(pooling)
    # the missing FLAIR, T1w and T2w folders come first, but the model reads only T1wCE
    assert rows[0]["note"] == "no usable slices: T1wCE: series folder empty"
    assert [r["BraTS21ID"] for r in rows[1:]] == ids
    for row in rows[1:]:
        assert row["score"] == pytest.approx(sub[row["BraTS21ID"]], abs=1e-6) and row["note"] == "", row
    with pytest.raises(DataError, match="no usable slices for T1wCE") as error:
        predict.predict_folders([empty], card=card, files=files, pooling=pooling)
    assert error.value.path == str(empty)
    (tmp_path / "none").mkdir()
    for patients, patients_dir, path, reason in [
        ([], tmp_path / "nowhere", tmp_path / "nowhere", "not a folder"),
        ([tmp_path / "nowhere"], None, tmp_path / "nowhere", "not a patient folder"),
        ([], tmp_path / "none", tmp_path / "none", "no patient folders found"),
        ([], None, ".", "no patient folders found"),
    ]:
        with pytest.raises(DataError) as error:
            predict.patient_folders(patients, patients_dir)
        assert (error.value.path, error.value.reason) == (str(path), reason)


def test_a_folder_named_by_the_bare_number_is_reported_by_its_five_digit_id(predicted, tmp_path):
    """The challenge's IDs are five digits; a folder named ``123`` is patient ``00123``."""
    from stages import predict

    folder, _ = predicted
    source = sorted(p for p in (folder.parent / "raw" / "test").iterdir() if p.is_dir())[0]
    short = tmp_path / str(int(source.name))
    shutil.copytree(source, short)
    card, files = read_card(folder / "models")
    pooling = load_params(folder / "params.yaml").cv.pooling
    [row] = predict.predict_folders([short], card=card, files=files, pooling=pooling)
    assert row["BraTS21ID"] == source.name != short.name


def test_a_folder_of_blank_slices_says_so(predicted, tmp_path):
    """Slices that read well but are all blank (one bright pixel each: not constant, under the
    foreground fraction) leave no sample and no problem: the note says the slices are blank."""
    import pydicom

    from stages import predict

    folder, _ = predicted
    source = sorted(p for p in (folder.parent / "raw" / "test").iterdir() if p.is_dir())[0]
    blank = tmp_path / source.name
    shutil.copytree(source, blank)
    for path in sorted((source / "T1wCE").glob("*.dcm")):
        ds = pydicom.dcmread(path)
        pixels = np.zeros_like(ds.pixel_array)
        pixels[0, 0] = pixels.dtype.type(1000)
        ds.PixelData = pixels.tobytes()
        ds.save_as(blank / "T1wCE" / path.name)
    card, files = read_card(folder / "models")
    pooling = load_params(folder / "params.yaml").cv.pooling
    [row] = predict.predict_folders([blank, source], card=card, files=files, pooling=pooling)[:1]
    assert row == {
        "BraTS21ID": source.name,
        "score": card.neutral_score(pooling),
        "note": "no usable slices: all slices blank",
    }


def test_a_test_patient_without_a_cache_entry_gets_the_neutral_score_and_is_named(predicted, tmp_path):
    """``predict.submission`` in this process: a test patient whose cache entry is missing (all
    its slices were skipped) gets the neutral score and is listed; the others keep their scores."""
    from stages import predict
    from stages.cache import entry_path
    from stages.params import load_paths

    folder, _ = predicted
    paths = load_paths(folder / "paths.yaml")
    card, files = read_card(folder / "models")
    pooling = load_params(folder / "params.yaml").cv.pooling
    cache = tmp_path / "cache"
    shutil.copytree(paths.cache_dir, cache)
    table = pd.read_csv(paths.patients, dtype=str, keep_default_na=False)
    ids = table.loc[table["split"] == "test", "BraTS21ID"].tolist()
    entry_path(cache, f"test/{ids[1]}").unlink()
    rows, fallback = predict.submission(
        card=card, files=files, patients_csv=Path(paths.patients), cache_dir=cache, pooling=pooling
    )
    sub = pd.read_csv(folder / "submission.csv", dtype={"BraTS21ID": str}).set_index("BraTS21ID")["MGMT_value"]
    assert fallback == [ids[1]] and [r["BraTS21ID"] for r in rows] == ids
    assert rows[1]["MGMT_value"] == card.neutral_score(pooling)
    assert all(r["MGMT_value"] == pytest.approx(sub[r["BraTS21ID"]], abs=1e-6) for r in rows if r is not rows[1])
    twice = tmp_path / "patients.csv"
    pd.concat([table, table[table["split"] == "test"].head(1)]).to_csv(twice, index=False)
    with pytest.raises(DataError) as error:
        predict.submission(card=card, files=files, patients_csv=twice, cache_dir=cache, pooling=pooling)
    assert (error.value.path, error.value.reason) == (str(twice), "duplicate test IDs")
