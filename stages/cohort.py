"""Finding patients and labels in a dataset root laid out like the challenge download.

Reads CSV files and folder names only (no DICOM code).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from stages.errors import DataError, Problems

LABELS_FILE = "train_labels.csv"
SAMPLE_FILE = "sample_submission.csv"
ORACLE_FILE = "demo_oracle.csv"  # only in demo cohorts: the latent score behind each label


@dataclass(frozen=True)
class Patient:
    """One patient folder with its split and (for training patients) label."""

    split: str
    pid: str
    label: int | None
    folder: Path | None


def normalise_id(raw: object) -> str | None:
    """Zero-padded 5-digit BraTS21ID, or None when ``raw`` is not a non-negative integer."""
    text = str(raw).strip()
    if not text.isdigit() or len(text) > 5:
        return None
    return text.zfill(5)


def _read_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise DataError(path, f"unreadable CSV ({type(exc).__name__}: {exc})") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(path, f"missing column(s) {', '.join(missing)}")
    return table


def read_labels(path: Path, problems: Problems) -> dict[str, int]:
    """Valid ``BraTS21ID -> MGMT_value`` pairs; bad, duplicate or non-binary rows are recorded."""
    table = _read_table(path, ("BraTS21ID", "MGMT_value"))
    seen: dict[str, int] = {}
    duplicated: set[str] = set()
    for line, (raw_id, raw_label) in enumerate(zip(table["BraTS21ID"], table["MGMT_value"]), start=2):
        pid = normalise_id(raw_id)
        if pid is None:
            problems.add(f"{path.name}:{line}", f"non-numeric BraTS21ID {raw_id!r}")
            continue
        if raw_label.strip() not in ("0", "1"):
            problems.add(f"{path.name}:{line}", f"MGMT_value {raw_label!r} is not 0 or 1")
            continue
        if pid in seen:
            problems.add(f"{path.name}:{line}", f"duplicate BraTS21ID {pid}")
            duplicated.add(pid)
            continue
        seen[pid] = int(raw_label)
    return {pid: y for pid, y in seen.items() if pid not in duplicated}


def read_sample_ids(path: Path, problems: Problems) -> list[str]:
    """IDs of ``sample_submission.csv`` in file order; invalid or repeated IDs are recorded."""
    table = _read_table(path, ("BraTS21ID",))
    ids: list[str] = []
    for line, raw_id in enumerate(table["BraTS21ID"], start=2):
        pid = normalise_id(raw_id)
        if pid is None or pid in ids:
            problems.add(f"{path.name}:{line}", f"invalid or duplicate BraTS21ID {raw_id!r}")
            continue
        ids.append(pid)
    return ids


def patient_folders(split_dir: Path, problems: Problems) -> dict[str, Path]:
    """Patient folders of ``train/`` or ``test/`` keyed by zero-padded ID."""
    if not split_dir.is_dir():
        return {}
    folders: dict[str, Path] = {}
    for entry in sorted(split_dir.iterdir()):
        pid = normalise_id(entry.name) if entry.is_dir() else None
        if pid is None:
            problems.add(entry, "not a patient folder (expected a numeric BraTS21ID folder)")
        elif pid in folders:
            problems.add(entry, f"duplicate patient folder for {pid}")
        else:
            folders[pid] = entry
    return folders


def discover(raw_dir: Path, *, exclude: tuple[str, ...] | list[str], problems: Problems) -> list[Patient]:
    """Training patients with both folder and label, and every test patient, sorted by ID.

    Test patients come from ``sample_submission.csv`` when it exists (a listed patient without a
    folder is kept with ``folder=None`` so it still gets a prediction), else from ``test/``.
    A root that cannot be a dataset (no patient folders, no labels file, no labelled patient)
    is a DataError, raised before anything downstream can delete cached results.
    """
    if not raw_dir.is_dir():
        raise DataError(raw_dir, "dataset root does not exist (data.raw_dir)")
    labels_path = raw_dir / LABELS_FILE
    if not labels_path.is_file():
        raise DataError(labels_path, "labels file missing: not a dataset root (data.raw_dir)?")
    labels = read_labels(labels_path, problems)
    train = patient_folders(raw_dir / "train", problems)
    test = patient_folders(raw_dir / "test", problems)
    if not train and not test:
        raise DataError(raw_dir, "no patient folders under train/ or test/: not a dataset root (data.raw_dir)?")
    excluded = {normalise_id(e) for e in exclude}
    patients = []
    for pid in sorted(set(train) | set(labels)):
        if pid in excluded:
            continue
        if pid not in labels:
            problems.add(train[pid], "patient folder has no label")
        elif pid not in train:
            problems.add(f"train/{pid}", "label has no patient folder")
        else:
            patients.append(Patient("train", pid, labels[pid], train[pid]))
    if not patients:
        raise DataError(labels_path, "no labelled patient has a folder under train/")
    sample = raw_dir / SAMPLE_FILE
    test_ids = read_sample_ids(sample, problems) if sample.exists() else sorted(test)
    for pid in sorted(set(test) - set(test_ids)):
        problems.add(test[pid], "test folder not listed in sample_submission.csv")
    for pid in sorted(test_ids):
        if pid not in test:
            problems.add(f"test/{pid}", "listed in sample_submission.csv but has no folder")
        patients.append(Patient("test", pid, None, test.get(pid)))
    return patients


def read_oracle(raw_dir: Path) -> dict[str, float]:
    """Latent scores of a demo cohort by ID (empty for real data); read by ``evaluate`` only."""
    path = raw_dir / ORACLE_FILE
    if not path.exists():
        return {}
    table = _read_table(path, ("BraTS21ID", "score"))
    return {normalise_id(i) or i: float(s) for i, s in zip(table["BraTS21ID"], table["score"])}


def read_patients(path: Path | str) -> pd.DataFrame:
    """The preprocess stage's patient table, IDs kept as zero-padded strings."""
    return pd.read_csv(path, dtype={"split": str, "BraTS21ID": str, "MGMT_value": str}, keep_default_na=False)
