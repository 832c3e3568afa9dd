"""Cross-validation splits: grouped by patient, stratified, seeded; cohorts too small are refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stages.cv import check_folds, eligible_patients, patient_folds, sample_count, splits
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
