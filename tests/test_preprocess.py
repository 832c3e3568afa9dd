"""The preprocess stage: ordering, skips and strict mode, raw data safety, no identities, caching."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import yaml

from stages import preprocess
from stages.cohort import discover, normalise_id
from stages.dicom import DataError
from stages.volume import Problems, choose_slices, is_blank, normalise, pad_square, shrink
from tests.conftest import IDENTIFYING, PREPROCESS, tree_digest

SERIES = ["FLAIR", "T1w", "T1wCE", "T2w"]
ROOT = Path(__file__).resolve().parents[1]


def run(raw: Path, out: Path, settings: dict, *, strict: bool = False, exclude: tuple = ()) -> tuple[list, dict]:
    return preprocess.run(
        raw_dir=raw,
        cache_dir=out / "cache",
        state_file=out / "state.json",
        series=SERIES,
        settings=settings,
        exclude=list(exclude),
        strict=strict,
        workers=2,
    )


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


def test_choose_slices_takes_the_middle_every_kth():
    assert choose_slices(100, middle_fraction=0.5, step=3).tolist() == list(range(25, 75, 3))
    assert choose_slices(1, middle_fraction=0.5, step=3).tolist() == [0]
    assert choose_slices(0, middle_fraction=0.5, step=3).tolist() == []


def to_square(image: np.ndarray, *, spacing: tuple[float, float], size: int) -> np.ndarray:
    return pad_square(shrink(image, spacing=spacing, size=size), size=size, fill=0.0)


def test_shrink_and_pad_square_keep_the_aspect_without_stretching():
    img = np.ones((10, 20), np.float32)
    out = to_square(img, spacing=(1.0, 1.0), size=20)
    assert out.shape == (20, 20)
    assert out[:5].sum() == 0 and out[15:].sum() == 0 and out[5:15].min() == 1  # padded top and bottom
    anisotropic = to_square(np.ones((10, 10), np.float32), spacing=(2.0, 1.0), size=20)
    assert anisotropic[:, :5].sum() == 0 and anisotropic[:, 5:15].min() == 1  # 20 mm tall, 10 mm wide


def test_normalise_ignores_outliers_and_blank_rule():
    vol = np.random.default_rng(0).uniform(100, 200, size=(4, 32, 32)).astype(np.float32)
    vol[0, 0, 0] = 1e6  # a hot pixel must not darken the series
    scaled = normalise(vol, percentiles=(0.5, 99.5))
    assert scaled.max() == 1.0 and np.median(scaled) == pytest.approx(0.5, abs=0.05)
    assert normalise(np.ones((2, 4, 4)), percentiles=(0.5, 99.5)) is None
    assert is_blank(np.zeros((8, 8)), level=0.1, min_fraction=0.02)
    assert not is_blank(np.ones((8, 8)), level=0.1, min_fraction=0.02)


def test_ids_are_normalised():
    assert normalise_id("5") == "00005" and normalise_id(" 00709 ") == "00709"
    assert normalise_id("abc") is None and normalise_id("-1") is None and normalise_id("123456") is None


def test_default_cohort_converts_with_recorded_skips(tmp_path, tiny_cohort, settings):
    rows, report = run(tiny_cohort, tmp_path, settings, exclude=("00109", "00123", "00709"))
    ids = {r["BraTS21ID"] for r in rows}
    assert not ids & {"00109", "00123", "00709"}
    reasons = " ".join(p["file"] + " " + p["reason"] for p in report["problems"])
    assert "Thumbs.db" in reasons and "notes.txt" in reasons and "no pixel data" in reasons
    for r in rows:
        if r["split"] == "train":
            with np.load(tmp_path / "cache" / "train" / f"{r['BraTS21ID']}.npz") as npz:
                for name in SERIES:
                    assert npz[name].shape == (r[name], 16, 16) and npz[name].dtype == np.uint8
                    assert np.all(np.diff(npz[f"{name}_z"]) > 0), "slices ordered along the axis"


def test_every_bad_case_is_reported_lenient(tmp_path, tiny_cohort, settings):
    raw = tmp_path / "raw"
    expected = make_bad_cohort(tiny_cohort, raw)
    before = tree_digest(raw)
    rows, report = run(raw, tmp_path / "out", settings)
    problems = [f"{p['file']}: {p['reason']}" for p in report["problems"]]
    for file, reason in expected.items():
        assert any(p.startswith(file) and reason in p for p in problems), (file, reason, problems)
    joined = "\n".join(problems)
    for needle in (
        "inconsistent slice size",
        "series folder empty",
        "non-numeric BraTS21ID",
        "is not 0 or 1",
        "not a DICOM file",
        "no pixel data",
        "truncated",
    ):
        assert needle in joined, needle
    assert tree_digest(raw) == before, "raw data must never be written"
    assert {r["BraTS21ID"] for r in rows if r["split"] == "train"} >= {"00109"}


def test_strict_mode_stops_with_one_line_naming_the_file(tmp_path, tiny_cohort):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["raw_dir"] = str(tiny_cohort)
    params["preprocess"].update(PREPROCESS, strict=True, workers=1)
    params["paths"] = {k: str(tmp_path / Path(v).name) for k, v in params["paths"].items()}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "MGMT_PARAMS": str(tmp_path / "params.yaml"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "stages.preprocess"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("preprocess: ") and "Traceback" not in proc.stderr
    assert ".dcm" in last or "Thumbs.db" in last or "notes.txt" in last or "T2w" in last


def test_strict_run_raises_data_error(tmp_path, tiny_cohort, settings):
    with pytest.raises(DataError):
        run(tiny_cohort, tmp_path, settings, strict=True)


def test_no_identifying_values_leave_the_raw_files(tmp_path, tiny_cohort, settings):
    ds = pydicom.dcmread(next(tiny_cohort.rglob("Image-*.dcm")))
    assert str(ds.PatientName).startswith("DEMO^PHANTOM")  # the raw files do carry them
    rows, report = run(tiny_cohort, tmp_path, settings)
    (tmp_path / "report.json").write_text(json.dumps(report))
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for value in IDENTIFYING:
                assert value not in data, (path, value)


def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    from stages import io

    target = tmp_path / "x.npz"
    io.save_npz(target, {"a": np.arange(3)})
    before = target.read_bytes()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(io.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        io.save_npz(target, {"a": np.arange(5)})
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.npz"]


def test_cache_files_are_reproducible(tmp_path, clean_cohort, settings):
    run(clean_cohort, tmp_path / "a", settings)
    run(clean_cohort, tmp_path / "b", settings)
    assert tree_digest(tmp_path / "a" / "cache") == tree_digest(tmp_path / "b" / "cache")


def test_incremental_rerun_converts_only_what_changed(tmp_path, clean_cohort, settings, monkeypatch):
    raw = tmp_path / "raw"
    shutil.copytree(clean_cohort, raw)
    run(raw, tmp_path / "inc", settings)
    # grow by two patients, change one file of a third, drop a fourth
    train = sorted(p.name for p in (raw / "train").iterdir())
    labels = (raw / "train_labels.csv").read_text()
    for new, src in (("00990", train[0]), ("00991", train[1])):
        shutil.copytree(raw / "train" / src, raw / "train" / new)
        labels += f"{new},1\n"
    (raw / "train_labels.csv").write_text(labels)
    changed = sorted((raw / "train" / train[2] / "T1wCE").iterdir())[3]
    ds = pydicom.dcmread(changed)
    ds.PixelData = (ds.pixel_array // 2).astype(np.uint16).tobytes()
    ds.save_as(changed, enforce_file_format=True)
    shutil.rmtree(raw / "train" / train[3])
    (raw / "train_labels.csv").write_text(
        "".join(line + "\n" for line in labels.splitlines() if not line.startswith(train[3]))
    )

    converted = []
    original = preprocess.convert_patient

    def recording(task, **kwargs):
        converted.append(task["entry"])
        return original(task, **kwargs)

    monkeypatch.setattr(preprocess, "convert_patient", recording)
    kwargs = {
        "cache_dir": tmp_path / "inc" / "cache",
        "state_file": tmp_path / "inc" / "state.json",
        "series": SERIES,
        "settings": settings,
        "exclude": [],
        "strict": False,
        "workers": 1,
    }
    rows, report = preprocess.run(raw_dir=raw, **kwargs)
    assert sorted(converted) == sorted(["train/00990", "train/00991", f"train/{train[2]}"])
    assert not (tmp_path / "inc" / "cache" / "train" / f"{train[3]}.npz").exists()
    # unchanged, and unchanged content without the stat cache (a fresh clone): nothing converted
    converted.clear()
    preprocess.run(raw_dir=raw, **kwargs)
    (tmp_path / "inc" / "state.json").unlink()
    preprocess.run(raw_dir=raw, **kwargs)
    assert converted == []
    monkeypatch.undo()
    fresh_rows, fresh_report = run(raw, tmp_path / "fresh", settings)
    assert tree_digest(tmp_path / "inc" / "cache") == tree_digest(tmp_path / "fresh" / "cache")
    assert rows == fresh_rows and report == fresh_report


def test_discover_matches_labels_and_folders(clean_cohort):
    problems = Problems()
    patients = discover(clean_cohort, exclude=["00109"], problems=problems)
    train = [p for p in patients if p.split == "train"]
    assert "00109" not in {p.pid for p in train} and len(train) == 11
    assert all(p.label in (0, 1) for p in train) and problems.items == []


def test_read_with_stat_returns_whole_content_and_its_stat(tmp_path, monkeypatch):
    from stages import io

    path = tmp_path / "f.bin"
    payload = bytes(range(256)) * 1000
    path.write_bytes(payload)
    st, data = io.read_with_stat(path)
    assert data == payload and st.st_size == len(payload) and st.st_mtime_ns == path.stat().st_mtime_ns
    # short reads (allowed by POSIX) are completed
    real_pread = os.pread
    monkeypatch.setattr(io.os, "pread", lambda fd, n, off: real_pread(fd, min(n, 1000), off))
    assert io.read_with_stat(path)[1] == payload


def test_read_range_reads_exactly_the_range(tmp_path, monkeypatch):
    from stages import io

    path = tmp_path / "f.bin"
    payload = bytes(range(256)) * 1000
    path.write_bytes(payload)
    assert io.read_range(path, 1000, 5000) == payload[1000:6000]
    assert io.read_range(path, len(payload) - 10, 100) == payload[-10:]  # fewer at the end
    real_pread = os.pread
    monkeypatch.setattr(io.os, "pread", lambda fd, n, off: real_pread(fd, min(n, 700), off))
    assert io.read_range(path, 1000, 5000) == payload[1000:6000]
