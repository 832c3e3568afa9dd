"""The inventory: one digest per patient folder, current after any change, re-reading only changes."""

from __future__ import annotations

import os
import shutil

import pytest

from stages import inventory
from stages.errors import DataError
from stages.inventory import scan, table


@pytest.fixture
def raw(tmp_path, clean_cohort):
    root = tmp_path / "raw"
    shutil.copytree(clean_cohort, root)
    return root


def counting(monkeypatch) -> list[str]:
    read: list[str] = []
    original = inventory.file_digest
    monkeypatch.setattr(inventory, "file_digest", lambda path, size: read.append(path) or original(path, size))
    return read


def test_one_entry_per_patient_folder_and_top_level_file(raw, tmp_path):
    items = scan(raw, state_db=tmp_path / "state.sqlite")
    patients = {f"{split}/{p.name}" for split in ("train", "test") for p in (raw / split).iterdir()}
    assert set(items) == patients | {"train_labels.csv", "sample_submission.csv", "demo_oracle.csv", "demo_cohort.json"}
    n_files = sum(1 for p in (raw / "train").iterdir() for _ in p.rglob("*.dcm"))
    assert sum(items[name].files for name in items if name.startswith("train/")) == n_files
    text = table(items)
    assert text.splitlines()[0] == "entry\tfiles\tbytes\txxh3_128" and len(text.splitlines()) == len(items) + 1


def test_digests_depend_on_content_only(raw, tmp_path):
    first = scan(raw, state_db=tmp_path / "a.sqlite")
    copy = tmp_path / "copy"
    shutil.copytree(raw, copy)  # new inodes and mtimes, same content
    assert table(scan(copy, state_db=tmp_path / "b.sqlite")) == table(first)


def test_any_change_is_seen_and_only_changed_files_are_read(raw, tmp_path, monkeypatch):
    state = tmp_path / "state.sqlite"
    before = scan(raw, state_db=state)
    read = counting(monkeypatch)
    assert scan(raw, state_db=state) == before and read == [], "an unchanged tree reads no file"
    train = sorted(p.name for p in (raw / "train").iterdir())
    changed = sorted((raw / "train" / train[0] / "T1wCE").iterdir())[2]
    data = bytearray(changed.read_bytes())
    data[-1] ^= 0xFF  # same size
    changed.write_bytes(bytes(data))
    (raw / "train" / train[1] / "FLAIR" / "extra.dcm").write_bytes(b"new file")
    shutil.rmtree(raw / "train" / train[2] / "T2w")
    (raw / "train" / train[3] / "T1w" / "Image-1.dcm").rename(raw / "train" / train[3] / "T1w" / "Image-99.dcm")
    after = scan(raw, state_db=state)
    moved = {f"train/{t}" for t in train[:4]}
    assert {n for n in after if after[n] != before[n]} == moved
    assert sorted(read) == sorted(
        [
            str(changed),
            str(raw / "train" / train[1] / "FLAIR" / "extra.dcm"),
            str(raw / "train" / train[3] / "T1w" / "Image-99.dcm"),
        ]
    )


def test_a_touched_file_is_read_again_but_keeps_its_digest(raw, tmp_path, monkeypatch):
    state = tmp_path / "state.sqlite"
    before = scan(raw, state_db=state)
    path = next((raw / "test").rglob("*.dcm"))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    read = counting(monkeypatch)
    assert scan(raw, state_db=state) == before and read == [str(path)]


def test_another_root_starts_afresh(raw, tmp_path, monkeypatch):
    state = tmp_path / "state.sqlite"
    scan(raw, state_db=state)
    other = tmp_path / "other"
    shutil.copytree(raw / "test", other / "test")
    read = counting(monkeypatch)
    items = scan(other, state_db=state)
    assert set(items) == {f"test/{p.name}" for p in (other / "test").iterdir()} and len(read) > 0


def test_a_missing_root_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        scan(tmp_path / "nowhere", state_db=tmp_path / "s.sqlite")


def test_parallel_scans_equal_serial_ones_and_see_changes(raw, tmp_path):
    serial = table(scan(raw, state_db=tmp_path / "serial.sqlite"))
    assert table(scan(raw, state_db=tmp_path / "parallel.sqlite", workers=2)) == serial
    victim = next((raw / "train").rglob("*.dcm"))
    victim.write_bytes(victim.read_bytes() + b"\0")
    changed = table(scan(raw, state_db=tmp_path / "parallel.sqlite", workers=2))
    assert changed != serial and changed == table(scan(raw, state_db=tmp_path / "serial.sqlite"))
