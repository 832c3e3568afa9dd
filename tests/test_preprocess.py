"""The preprocess stage: skips and strict mode, refusing to destroy, no identities, incremental and
crash-safe caching, labels aligned."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from stages import convert, preprocess
from stages.challenge import FAULTY_IDS
from stages.errors import DataError
from stages.inventory import scan
from tests.conftest import IDENTIFYING, ROOT, make_settings, preprocess_stage, tree_digest, write_config


def run(raw: Path, out: Path, **kwargs) -> preprocess.Outcome:
    kwargs = {"settings": make_settings(), "workers": 2, **kwargs}
    inventory = scan(raw, state_db=out / "state.sqlite")
    return preprocess.run(raw_dir=raw, cache_dir=out / "cache", inventory=inventory, **kwargs)


def make_bad_cohort(src: Path, dst: Path) -> dict[str, str]:
    """Copy a quirky cohort and add every label and folder fault; returns file -> expected reason."""
    shutil.copytree(src, dst)
    train = sorted(p.name for p in (dst / "train").iterdir())
    a, b, c, d, e = train[3:8]
    shutil.rmtree(dst / "train" / a / "T1w")  # missing series folder
    shutil.copytree(dst / "train" / b, dst / "train" / "99998")  # folder without a label
    (dst / "train" / "notes").mkdir()  # a non-numeric patient folder
    first = sorted((dst / "train" / c / "T2w").iterdir())[0]
    first.write_bytes(first.read_bytes()[:300])  # truncated in the header
    for path in sorted((dst / "train" / c / "T1wCE").iterdir()):  # truncated in the pixel data
        path.write_bytes(path.read_bytes()[:-100])
    for path in sorted((dst / "train" / e / "FLAIR").iterdir()):  # DICOM without pixel data
        ds = pydicom.dcmread(path)
        del ds.PixelData
        ds.save_as(path, enforce_file_format=True)
    labels = (dst / "train_labels.csv").read_text().splitlines()
    labels += ["99999,1", f"{d},0", "abc,1", "00977,2"]  # no folder, duplicate, non-numeric, not 0/1
    (dst / "train_labels.csv").write_text("\n".join(labels) + "\n")
    return {
        f"train/{a}/T1w": "series folder missing",
        "train/99998": "patient folder has no label",
        "train/notes": "not a patient folder",
        f"train/{c}/T2w/{first.name}": "truncated",
        f"train/{c}/T1wCE/": "cannot decode pixel data",
        "train/99999": "label has no patient folder",
        "train_labels.csv:": "duplicate BraTS21ID",
        f"train/{e}/FLAIR/": "no pixel data",
    }


def test_the_default_cohort_converts_with_recorded_skips(tmp_path, tiny_cohort):
    outcome = run(tiny_cohort, tmp_path, exclude=FAULTY_IDS)
    ids = {r["BraTS21ID"] for r in outcome.rows}
    assert not ids & set(FAULTY_IDS) and len(outcome.rows) == 12
    reasons = " ".join(p["file"] + " " + p["reason"] for p in outcome.report["problems"])
    assert "Thumbs.db" in reasons and "notes.txt" in reasons and "no pixel data" in reasons
    for r in outcome.rows:
        with np.load(tmp_path / "cache" / r["split"] / f"{r['BraTS21ID']}.npz") as npz:
            for name in ("FLAIR", "T1w", "T1wCE", "T2w"):
                assert npz[name].shape == (r[name], 16, 16) and npz[name].dtype == np.uint8
                assert np.all(np.diff(npz[f"{name}_z"]) > 0), "slices ordered along the axis"
    config = json.loads((tmp_path / "cache" / "config.json").read_text())
    assert config["settings"]["img_size"] == 16 and len(config["digest"]) == 64


def test_every_bad_case_is_reported_and_raw_data_is_never_written(tmp_path, tiny_cohort):
    raw = tmp_path / "raw"
    expected = make_bad_cohort(tiny_cohort, raw)
    before = tree_digest(raw)
    outcome = run(raw, tmp_path / "out")
    problems = [f"{p['file']}: {p['reason']}" for p in outcome.report["problems"]]
    for file, reason in expected.items():
        assert any(p.startswith(file) and reason in p for p in problems), (file, reason, problems)
    joined = "\n".join(problems)
    for needle in (
        "inconsistent slice size",
        "series folder empty",
        "non-numeric BraTS21ID",
        "is not 0 or 1",
        "not a DICOM file",
    ):
        assert needle in joined, needle
    assert tree_digest(raw) == before
    assert "00109" in {r["BraTS21ID"] for r in outcome.rows}


def test_patients_csv_carries_the_labels_of_train_labels_csv(tmp_path, clean_cohort):
    env = write_config(tmp_path, raw_dir=clean_cohort, preprocess={"img_size": 16})
    assert preprocess_stage(env).returncode == 0
    table = pd.read_csv(tmp_path / "data/patients.csv", dtype=str, keep_default_na=False)
    assert list(table.columns) == ["split", "BraTS21ID", "MGMT_value", "FLAIR", "T1w", "T1wCE", "T2w"]
    labels = pd.read_csv(clean_cohort / "train_labels.csv", dtype=str).set_index("BraTS21ID")["MGMT_value"]
    train = table[table["split"] == "train"].set_index("BraTS21ID")["MGMT_value"]
    assert train.to_dict() == labels.drop(list(FAULTY_IDS)).to_dict()
    assert (table.loc[table["split"] == "test", "MGMT_value"] == "").all()


def test_strict_mode_stops_with_one_line_naming_the_file(tmp_path, tiny_cohort):
    env = write_config(tmp_path, raw_dir=tiny_cohort, preprocess={"img_size": 16, "strict": True, "workers": 1})
    proc = preprocess_stage(env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("preprocess: ") and "preprocess.strict" in last
    assert ".dcm" in last or "Thumbs.db" in last or "notes.txt" in last or "T2w" in last


def test_strict_mode_fails_on_problems_remembered_from_cached_entries(tmp_path, tiny_cohort):
    raw = tmp_path / "raw"
    shutil.copytree(tiny_cohort, raw)
    (raw / "train_labels.csv").write_text((raw / "train_labels.csv").read_text())  # same content
    run(raw, tmp_path, exclude=FAULTY_IDS)  # lenient: every problem recorded in its entry
    with pytest.raises(DataError, match="preprocess.strict"):
        run(raw, tmp_path, exclude=FAULTY_IDS, strict=True)  # converts nothing, still fails


def test_nothing_is_deleted_for_a_root_that_cannot_be_a_dataset(tmp_path, clean_cohort):
    env = write_config(tmp_path / "run", raw_dir=clean_cohort, preprocess={"img_size": 16})
    assert preprocess_stage(env).returncode == 0
    cache = tmp_path / "run" / "data" / "cache"
    before = tree_digest(cache)
    empty, unlabelled = tmp_path / "empty", tmp_path / "unlabelled"
    empty.mkdir()
    shutil.copytree(clean_cohort / "train", unlabelled / "train")
    for raw in (empty, unlabelled):
        env = write_config(tmp_path / "run", raw_dir=raw, preprocess={"img_size": 16})
        proc = preprocess_stage(env)
        assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1 and str(raw) in proc.stderr
        assert tree_digest(cache) == before


def test_no_identifying_values_in_any_output_or_log(tmp_path, tiny_cohort):
    ds = pydicom.dcmread(next(tiny_cohort.rglob("Image-*.dcm")))
    assert str(ds.PatientName).startswith("DEMO^PHANTOM")  # the raw files do carry them
    env = write_config(tmp_path, raw_dir=tiny_cohort, preprocess={"img_size": 16})
    proc = preprocess_stage(env)
    assert proc.returncode == 0
    outputs = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    for value in IDENTIFYING:
        assert value.decode() not in proc.stderr + proc.stdout
        assert not any(value in data for data in outputs), value


def test_cache_files_are_reproducible_across_workers_and_readers(tmp_path, tiny_cohort):
    a = run(tiny_cohort, tmp_path / "a", workers=2, reader="fast")
    b = run(tiny_cohort, tmp_path / "b", workers=1, reader="plain")
    assert tree_digest(tmp_path / "a" / "cache") == tree_digest(tmp_path / "b" / "cache")
    assert a.rows == b.rows and a.report == b.report


def test_incremental_rerun_converts_only_what_changed(tmp_path, clean_cohort, monkeypatch):
    raw = tmp_path / "raw"
    shutil.copytree(clean_cohort, raw)
    run(raw, tmp_path / "inc")
    train = sorted(p.name for p in (raw / "train").iterdir())
    labels = (raw / "train_labels.csv").read_text()
    for new, src in (("00990", train[0]), ("00991", train[1])):  # grow by two patients
        shutil.copytree(raw / "train" / src, raw / "train" / new)
        labels += f"{new},1\n"
    changed = sorted((raw / "train" / train[2] / "T1wCE").iterdir())[3]  # change one file of a third
    ds = pydicom.dcmread(changed)
    ds.PixelData = (ds.pixel_array // 2).astype(np.uint16).tobytes()
    ds.save_as(changed, enforce_file_format=True)
    shutil.rmtree(raw / "train" / train[3])  # and drop a fourth
    (raw / "train_labels.csv").write_text("".join(f"{x}\n" for x in labels.splitlines() if not x.startswith(train[3])))

    converted: list[str] = []
    original = convert.convert_patient
    monkeypatch.setattr(
        convert, "convert_patient", lambda task, **kw: converted.append(task.name) or original(task, **kw)
    )
    outcome = run(raw, tmp_path / "inc", workers=1)
    assert sorted(converted) == sorted(["train/00990", "train/00991", f"train/{train[2]}"])
    assert not (tmp_path / "inc" / "cache" / "train" / f"{train[3]}.npz").exists()
    converted.clear()
    run(raw, tmp_path / "inc", workers=1)  # unchanged
    (tmp_path / "inc" / "state.sqlite").unlink()
    run(raw, tmp_path / "inc", workers=1)  # unchanged content, no stat cache (a fresh clone)
    assert converted == []
    monkeypatch.undo()
    fresh = run(raw, tmp_path / "fresh")
    assert tree_digest(tmp_path / "inc" / "cache") == tree_digest(tmp_path / "fresh" / "cache")
    assert outcome.rows == fresh.rows and outcome.report == fresh.report


def test_a_knob_the_method_does_not_use_converts_nothing(tmp_path, clean_cohort):
    from stages.params import load_params

    base = load_params(ROOT / "params.yaml").preprocess
    first = run(
        clean_cohort, tmp_path, settings=preprocess.settings_from_params(base.model_copy(update={"img_size": 16}))
    )
    again = base.model_copy(
        update={"img_size": 16, "ceiling": 9.0}
        if base.normalisation == "percentile"
        else {"img_size": 16, "clip_percentiles": (1.0, 99.0)}
    )
    assert run(clean_cohort, tmp_path, settings=preprocess.settings_from_params(again)).converted == 0
    assert first.converted == 15  # 12 training and 3 test patients
    used = again.model_copy(update={"blank_level": 0.2})  # a setting that counts: every entry is rebuilt
    assert run(clean_cohort, tmp_path, settings=preprocess.settings_from_params(used)).converted == 15


def entry_times(cache: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in cache.glob("*/*.npz")}


@pytest.fixture
def sigint_reaches_children():
    """Children that obey SIGINT even when this process was started with it ignored (a shell's
    background job, ``cmd &``, ignores SIGINT, and an ignored signal is inherited across exec)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_an_interrupted_run_is_repaired_by_the_next(tmp_path, tiny_cohort, sig, sigint_reaches_children):
    """Interrupt a run with changed parameters at several points, revert them, rerun: every output
    equals a run from scratch, byte for byte."""
    reference = tmp_path / "reference"
    env_ref = write_config(reference, raw_dir=tiny_cohort, preprocess={"img_size": 16, "workers": 1})
    assert preprocess_stage(env_ref).returncode == 0
    work = tmp_path / "work"
    env = write_config(work, raw_dir=tiny_cohort, preprocess={"img_size": 16, "workers": 2})
    assert preprocess_stage(env).returncode == 0
    cache = work / "data" / "cache"
    interrupted, reported = 0, 0
    for after, size in ((0, 24), (1, 20), (4, 28), (9, 18)):  # entries rewritten before the signal; new sizes
        changed = write_config(work, raw_dir=tiny_cohort, preprocess={"img_size": size, "workers": 2})
        start = time.time_ns()
        proc = subprocess.Popen(
            [sys.executable, "-m", "stages.preprocess"],
            cwd=ROOT,
            env=changed,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        while proc.poll() is None and sum(t > start for t in entry_times(cache).values()) < after:
            time.sleep(0.002)
        with contextlib.suppress(ProcessLookupError):  # finished first
            os.killpg(proc.pid, sig)
        _, err = proc.communicate()
        interrupted += proc.returncode != 0
        reported += err.strip().endswith("\npreprocess: interrupted") or err.strip() == "preprocess: interrupted"
    assert interrupted >= 3
    if sig == signal.SIGINT:  # Ctrl-C during the work ends with one line (at start-up Python may die first)
        assert reported >= 2
    env = write_config(work, raw_dir=tiny_cohort, preprocess={"img_size": 16, "workers": 2})
    assert preprocess_stage(env).returncode == 0
    assert tree_digest(cache) == tree_digest(reference / "data" / "cache")
    for name in ("data/patients.csv", "reports/preprocess.json"):
        assert (work / name).read_bytes() == (reference / name).read_bytes()
