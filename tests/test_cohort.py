"""Patients and labels: IDs, labels exactly as in train_labels.csv, and roots that cannot be datasets."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from stages.cohort import discover, normalise_id, read_labels, read_oracle, read_sample_ids
from stages.errors import DataError, Problems


def test_ids_are_normalised():
    assert normalise_id("5") == "00005" and normalise_id(" 00709 ") == "00709" and normalise_id(12) == "00012"
    assert normalise_id("abc") is None and normalise_id("-1") is None and normalise_id("123456") is None


def test_labels_are_read_exactly_as_written(tmp_path):
    (tmp_path / "train_labels.csv").write_text("BraTS21ID,MGMT_value\n5,1\n00012,0\n7,0\n109,1\n")
    problems = Problems()
    assert read_labels(tmp_path / "train_labels.csv", problems) == {"00005": 1, "00012": 0, "00007": 0, "00109": 1}
    assert problems.items == []


def test_bad_label_rows_are_recorded_and_dropped(tmp_path):
    (tmp_path / "train_labels.csv").write_text("BraTS21ID,MGMT_value\n1,1\nabc,0\n2,2\n3,1\n3,0\n4,\n")
    problems = Problems()
    assert read_labels(tmp_path / "train_labels.csv", problems) == {"00001": 1}
    assert [p.reason for p in problems.items] == [
        "non-numeric BraTS21ID 'abc'",
        "MGMT_value '2' is not 0 or 1",
        "duplicate BraTS21ID 00003",
        "MGMT_value '' is not 0 or 1",
    ]
    assert [p.file for p in problems.items][:2] == ["train_labels.csv:3", "train_labels.csv:4"]


def test_discover_matches_labels_folders_and_the_sample_submission(clean_cohort):
    problems = Problems()
    patients = discover(clean_cohort, exclude=["00109"], problems=problems)
    train = [p for p in patients if p.split == "train"]
    labels = pd.read_csv(clean_cohort / "train_labels.csv", dtype=str)
    expected = {r.BraTS21ID: int(r.MGMT_value) for r in labels.itertuples() if r.BraTS21ID != "00109"}
    assert {p.pid: p.label for p in train} == expected
    assert all(p.folder == clean_cohort / "train" / p.pid for p in train)
    sample = pd.read_csv(clean_cohort / "sample_submission.csv", dtype=str)
    assert sorted(p.pid for p in patients if p.split == "test") == sorted(sample["BraTS21ID"])
    assert problems.items == []


def test_read_sample_ids_keeps_file_order_and_drops_repeats(tmp_path):
    (tmp_path / "s.csv").write_text("BraTS21ID,MGMT_value\n9,0.5\n3,0.5\n9,0.5\nx,0.5\n")
    problems = Problems()
    assert read_sample_ids(tmp_path / "s.csv", problems) == ["00009", "00003"]
    assert len(problems.items) == 2


@pytest.mark.parametrize(
    "case", ["missing root", "empty root", "no labels file", "no patient folders", "no labelled patient"]
)
def test_a_root_that_cannot_be_a_dataset_is_an_error(tmp_path, clean_cohort, case):
    root = tmp_path / "raw"
    if case != "missing root":
        root.mkdir()
    if case in ("no patient folders", "no labelled patient"):
        shutil.copy(clean_cohort / "train_labels.csv", root / "train_labels.csv")
    if case == "no labelled patient":
        (root / "train" / "99999" / "T1wCE").mkdir(parents=True)
    if case == "no labels file":
        shutil.copytree(clean_cohort / "train", root / "train")
    with pytest.raises(DataError) as info:
        discover(root, exclude=[], problems=Problems())
    assert str(root) in str(info.value) and "\n" not in str(info.value)


def test_the_oracle_is_read_only_from_demo_cohorts(tmp_path, clean_cohort):
    oracle = read_oracle(clean_cohort)
    table = pd.read_csv(clean_cohort / "demo_oracle.csv", dtype={"BraTS21ID": str})
    assert oracle == {r.BraTS21ID: pytest.approx(r.score) for r in table.itertuples()}
    assert read_oracle(tmp_path) == {}
