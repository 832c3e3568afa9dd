"""Atomic, byte-stable outputs and exact reads."""

from __future__ import annotations

import io as pyio
import os
import stat
import zipfile

import numpy as np
import pytest

from stages import io

WRITERS = {
    "write_json": lambda path, v: io.write_json(path, {"v": v}),
    "write_text": lambda path, v: io.write_text(path, f"v={v}\n"),
    "write_csv": lambda path, v: io.write_csv(path, [{"v": v}], ["v"]),
    "save_npz": lambda path, v: io.save_npz(path, {"a": np.arange(v)}, {"key": str(v)}),
    "atomic_write_bytes": lambda path, v: io.atomic_write_bytes(path, bytes([v])),
}


@pytest.mark.parametrize("name", WRITERS)
def test_an_interrupted_write_leaves_the_old_file_and_no_partial_one(tmp_path, monkeypatch, name):
    target = tmp_path / "out.bin"
    WRITERS[name](target, 3)
    before = target.read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(io.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        WRITERS[name](target, 5)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


@pytest.mark.parametrize("name", WRITERS)
def test_outputs_are_readable_by_others(tmp_path, name):
    WRITERS[name](tmp_path / "out.bin", 3)
    mode = (tmp_path / "out.bin").stat().st_mode
    assert mode & stat.S_IRGRP and mode & stat.S_IROTH


def test_partial_files_of_a_killed_write_are_removed(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / ".00012.npz.abc.tmp").write_bytes(b"half")
    (tmp_path / "train" / "00012.npz").write_bytes(b"whole")
    assert io.remove_partial_files(tmp_path) == 1
    assert [p.name for p in (tmp_path / "train").iterdir()] == ["00012.npz"]


def test_npz_is_byte_stable_and_carries_its_meta(tmp_path):
    arrays = {"b": np.ones((2, 3), np.uint8), "a": np.arange(4, dtype=np.float32)}
    io.save_npz(tmp_path / "x.npz", arrays, {"key": "k1", "counts": {"a": 4}})
    first = (tmp_path / "x.npz").read_bytes()
    io.save_npz(tmp_path / "x.npz", dict(reversed(list(arrays.items()))), {"counts": {"a": 4}, "key": "k1"})
    assert (tmp_path / "x.npz").read_bytes() == first
    with np.load(tmp_path / "x.npz") as npz:
        np.testing.assert_array_equal(npz["b"], arrays["b"])
        assert npz["a"].dtype == np.float32
    assert io.read_npz_meta(tmp_path / "x.npz") == {"key": "k1", "counts": {"a": 4}}
    io.save_npz(tmp_path / "plain.npz", arrays)
    assert io.read_npz_meta(tmp_path / "plain.npz") is None
    (tmp_path / "broken.npz").write_bytes(first[: len(first) // 2])
    assert io.read_npz_meta(tmp_path / "broken.npz") is None
    assert io.read_npz_meta(tmp_path / "missing.npz") is None


def keras_like(date: str, ids: tuple[str, str], when: tuple) -> bytes:
    buf = pyio.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(zipfile.ZipInfo("metadata.json", when), f'{{"keras_version": "3", "date_saved": "{date}"}}')
        a, b = (f'{{"shared_object_id": {i}}}' for i in ids)
        config = f'{{"a": {a}, "b": {b}, "c": {a}}}'
        zf.writestr(zipfile.ZipInfo("config.json", when), config)
        zf.writestr(zipfile.ZipInfo("model.weights.h5", when), b"weights")
    return buf.getvalue()


def test_keras_archives_lose_their_stamps_but_not_their_content():
    a = io.stable_keras_bytes(
        keras_like("2026-11-28@00:13:03", ("140272478985104", "140272478985555"), (2026, 11, 28, 0, 13, 2))
    )
    b = io.stable_keras_bytes(keras_like("2027-01-01@10:00:00", ("93847561", "93847999"), (2027, 1, 1, 10, 0, 0)))
    assert a == b
    with zipfile.ZipFile(pyio.BytesIO(a)) as zf:
        assert zf.read("model.weights.h5") == b"weights"
        assert b'"shared_object_id": 1}' in zf.read("config.json") and b'"shared_object_id": 2}' in zf.read(
            "config.json"
        )
        assert zf.read("config.json").count(b'"shared_object_id": 1}') == 2, "shared objects stay shared"
    different = io.stable_keras_bytes(keras_like("2026-11-28@00:13:03", ("1", "1"), (2026, 11, 28, 0, 13, 2)))
    assert different != a, "objects that were not shared must not become shared"


def test_read_whole_and_read_range_complete_short_reads(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    payload = bytes(range(256)) * 1000
    path.write_bytes(payload)
    assert io.read_whole(path) == payload
    assert io.read_range(path, 1000, 5000) == payload[1000:6000]
    assert io.read_range(path, len(payload) - 10, 100) == payload[-10:]  # fewer at the end
    real_pread = os.pread
    monkeypatch.setattr(io.os, "pread", lambda fd, n, off: real_pread(fd, min(n, 700), off))
    assert io.read_whole(path) == payload
    assert io.read_range(path, 1000, 5000) == payload[1000:6000]
