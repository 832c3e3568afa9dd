"""Patient-grouped cross-validation: who trains, who stops training, who is scored (no TensorFlow).

Outer folds are stratified and grouped by patient (``StratifiedGroupKFold``); inside each
training fold a further grouped split holds out the validation patients that drive early
stopping and calibration. No patient is on both sides of any split, and a held-out fold never
influences its model.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stages.errors import ParamError


@dataclass(frozen=True)
class Split:
    """One model's patients, as indices into the eligible-patient table."""

    repeat: int
    fold: int
    fit: np.ndarray  # trains the model
    val: np.ndarray  # early stopping and calibration
    test: np.ndarray  # held out: scored only

    @property
    def name(self) -> str:
        return f"repeat{self.repeat}_fold{self.fold}"


@dataclass(frozen=True)
class FoldData:
    """The patients one model trains and validates on: cache entry paths, labels, sample count."""

    fit_paths: list[Path]
    fit_labels: np.ndarray
    fit_samples: int
    val_paths: list[Path]
    val_labels: np.ndarray


def fold_data(split: Split, *, files: list[Path], labels: np.ndarray, samples: np.ndarray) -> FoldData:
    """What the model of ``split`` trains and validates on, from per-patient files, labels and sample counts."""
    return FoldData(
        fit_paths=[files[i] for i in split.fit],
        fit_labels=labels[split.fit],
        fit_samples=int(samples[split.fit].sum()),
        val_paths=[files[i] for i in split.val],
        val_labels=labels[split.val],
    )


def sample_count(counts: dict[str, int], *, kind: str, series: list[str] | tuple[str, ...]) -> int:
    """Number of samples a patient gives, from the per-series slice counts of the cache."""
    if kind == "slices":
        return int(sum(counts[name] for name in series))
    if any(counts[name] == 0 for name in series):
        return 0
    return int(counts[series[0]]) if kind == "stack" else 1


def eligible_patients(table: pd.DataFrame, *, series: list[str] | tuple[str, ...], kind: str) -> pd.DataFrame:
    """Training patients that give the model at least one sample."""
    train = table[table["split"] == "train"].copy()
    counts = train[list(series)].astype(int)
    usable = [sample_count(c, kind=kind, series=series) > 0 for c in counts.to_dict("records")]
    return train[usable].reset_index(drop=True)


def patient_folds(labels: np.ndarray, ids: np.ndarray, *, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds grouped by patient: no patient is on both sides of any split."""
    if folds < 2:
        raise ValueError("cv.folds must be at least 2")
    from sklearn.model_selection import StratifiedGroupKFold  # imported late: `--help` answers fast

    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(ids)), labels, groups=ids))


def inner_folds(val_fraction: float) -> int:
    """Folds of the inner split that holds out about ``val_fraction`` of a training fold."""
    return max(2, round(1 / val_fraction))


def inner_split(
    labels: np.ndarray, ids: np.ndarray, *, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """One stratified, patient-grouped train/validation split of ``val_fraction``."""
    return patient_folds(labels, ids, folds=inner_folds(val_fraction), seed=seed)[0]


def check_folds(labels: np.ndarray, *, folds: int, val_fraction: float) -> None:
    """One-line ParamErrors when the cohort is too small for ``folds`` (and the inner split)."""
    smaller = int(min(np.sum(labels == 0), np.sum(labels == 1)))
    if folds > smaller:
        raise ParamError(
            "cv.folds", f"{folds} is not allowed: more folds than patients of the smaller class ({smaller})"
        )
    inner = inner_folds(val_fraction)
    if inner > smaller * (folds - 1) // folds:
        raise ParamError(
            "train.val_fraction",
            f"{val_fraction} is not allowed: too few patients of the smaller class ({smaller}) for its split",
        )


def splits(
    labels: np.ndarray, ids: np.ndarray, *, folds: int, seed: int, repeats: int, val_fraction: float
) -> Iterator[Split]:
    """Every (repeat, fold) split: repeat ``r`` uses fold seed ``seed + r``."""
    for r in range(repeats):
        for k, (train_idx, test_idx) in enumerate(patient_folds(labels, ids, folds=folds, seed=seed + r)):
            fit, val = inner_split(labels[train_idx], ids[train_idx], val_fraction=val_fraction, seed=seed + r + k)
            yield Split(r, k, train_idx[fit], train_idx[val], test_idx)
