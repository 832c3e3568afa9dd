"""Cross-validation splits: grouped by patient, stratified, seeded; cohorts too small are refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stages.cv import check_folds, eligible_patients, inner_folds, patient_folds, sample_count, splits
from stages.errors import ParamError


def cohort(n: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.random(n) < 0.5).astype(int), np.array([f"{i:05d}" for i in range(n)])


def test_folds_never_share_a_patient_and_are_stratified():
    labels, ids = cohort()
    folds = patient_folds(labels, ids, folds=5, seed=1)
    assert sorted(np.concatenate([test for _, test in folds])) == list(range(100)), "every patient held out once"
    for train, test in folds:
        assert not set(ids[train]) & set(ids[test])
        assert abs(labels[test].mean() - labels.mean()) < 0.1
    assert [t.tolist() for _, t in folds] == [t.tolist() for _, t in patient_folds(labels, ids, folds=5, seed=1)]
    assert [t.tolist() for _, t in folds] != [t.tolist() for _, t in patient_folds(labels, ids, folds=5, seed=2)]


def test_every_split_keeps_fit_validation_and_held_out_patients_apart():
    labels, ids = cohort()
    all_splits = list(splits(labels, ids, folds=5, seed=3, repeats=2, val_fraction=0.2))
    assert [(s.repeat, s.fold) for s in all_splits] == [(r, k) for r in range(2) for k in range(5)]
    for s in all_splits:
        fit, val, test = set(ids[s.fit]), set(ids[s.val]), set(ids[s.test])
        assert not fit & val and not fit & test and not val & test
        assert fit | val | test == set(ids)
        assert 0.15 < len(val) / (len(fit) + len(val)) < 0.25
    for r in range(2):
        held = np.concatenate([s.test for s in all_splits if s.repeat == r])
        assert sorted(held) == list(range(100))
    assert [s.test.tolist() for s in all_splits[:5]] != [s.test.tolist() for s in all_splits[5:]], "repeats differ"


def test_too_many_folds_for_the_cohort_are_refused_with_one_line():
    labels = np.array([0] * 30 + [1] * 10)
    check_folds(labels, folds=5, val_fraction=0.2)
    with pytest.raises(
        ParamError, match=r"cv\.folds: 11 is not allowed: more folds than patients of the smaller class \(10\)"
    ):
        check_folds(labels, folds=11, val_fraction=0.2)
    with pytest.raises(ParamError, match="train.val_fraction: 0.2 is not allowed"):  # 4-5 positives for 5 inner folds
        check_folds(np.array([0] * 30 + [1] * 6), folds=5, val_fraction=0.2)


def test_samples_and_eligible_patients():
    assert sample_count({"T1wCE": 5, "FLAIR": 3}, kind="slices", series=["T1wCE", "FLAIR"]) == 8
    assert sample_count({"T1wCE": 5, "FLAIR": 0}, kind="stack", series=["T1wCE", "FLAIR"]) == 0
    assert sample_count({"T1wCE": 5, "FLAIR": 3}, kind="stack", series=["T1wCE", "FLAIR"]) == 5
    assert sample_count({"T1wCE": 5}, kind="volume", series=["T1wCE"]) == 1
    table = pd.DataFrame(
        {
            "split": ["train", "train", "test"],
            "BraTS21ID": ["00001", "00002", "00003"],
            "MGMT_value": ["1", "0", ""],
            "T1wCE": [3, 0, 4],
            "FLAIR": [2, 2, 2],
        }
    )
    assert eligible_patients(table, series=["T1wCE"], kind="slices")["BraTS21ID"].tolist() == ["00001"]


def test_the_size_checks_allow_exactly_their_limits_whichever_class_is_smaller():
    check_folds(np.array([0] * 30 + [1] * 10), folds=10, val_fraction=0.2)  # as many folds as positives
    with pytest.raises(ParamError, match=r"more folds than patients of the smaller class \(10\)"):
        check_folds(np.array([0] * 10 + [1] * 30), folds=11, val_fraction=0.2)  # negatives the smaller class
    check_folds(np.array([0] * 30 + [1] * 6), folds=5, val_fraction=0.25)  # 4 inner folds of 4 training positives
    assert [inner_folds(v) for v in (0.5, 0.45, 0.25, 0.2, 0.1)] == [2, 2, 4, 5, 10]
    with pytest.raises(ValueError, match=r"^cv\.folds must be at least 2$"):
        patient_folds(*cohort(), folds=1, seed=0)
    assert len(patient_folds(*cohort(), folds=2, seed=0)) == 2


def test_splits_are_a_function_of_the_seed_and_repeat_r_uses_seed_plus_r():
    labels, ids = cohort()

    def listed(**kwargs):
        got = splits(labels, ids, folds=4, val_fraction=0.2, **kwargs)
        return [(s.repeat, s.fold, s.fit.tolist(), s.val.tolist(), s.test.tolist()) for s in got]

    assert listed(seed=3, repeats=2) == listed(seed=3, repeats=2)  # fit and validation too: nothing unseeded
    second = [row[4] for row in listed(seed=3, repeats=2) if row[0] == 1]
    assert second == [row[4] for row in listed(seed=4, repeats=1)]


def test_a_patient_with_one_sample_is_eligible_and_slices_count_across_series():
    table = pd.DataFrame(
        {
            "split": ["train", "train", "train"],
            "BraTS21ID": ["00001", "00002", "00003"],
            "MGMT_value": ["1", "0", "1"],
            "T1wCE": [1, 0, 0],
            "FLAIR": [0, 2, 0],
        }
    )
    picked = eligible_patients(table, series=["T1wCE", "FLAIR"], kind="slices")
    assert picked["BraTS21ID"].tolist() == ["00001", "00002"] and list(picked.columns) == list(table.columns)
    assert picked.index.tolist() == [0, 1]
