"""Converting one patient into its cache entry: the work ``preprocess`` hands to its pool workers.

Kept apart from the stage's orchestration so that a worker process imports only what converting
needs (DICOM reading, volumes, the cache format), not pandas, pydantic or the stage's listing code.
"""

from __future__ import annotations

import gc
import signal
from dataclasses import dataclass
from pathlib import Path

from stages.cache import EntryMeta, read_entry_meta
from stages.dicom import Reader
from stages.dicom_fast import make_reader
from stages.errors import Problems
from stages.io import save_npz
from stages.settings import PreprocessSettings
from stages.volume import empty_arrays, load_patient


@dataclass(frozen=True)
class PatientTask:
    """One patient to bring up to date: its entry name (``train/00012``), folder and expected key."""

    name: str
    folder: Path | None
    key: str
    out: Path
    root: Path
    files: int


@dataclass(frozen=True)
class PatientRecord:
    """The state of one entry after its task: what it records, and whether it was converted now."""

    name: str
    meta: EntryMeta
    converted: bool
    files: int


def convert_patient(task: PatientTask, *, settings: PreprocessSettings, reader: Reader) -> EntryMeta:
    """Convert one patient folder and write its entry (arrays and meta together, atomically)."""
    problems = Problems(root=task.root)
    if task.folder is None:  # listed for prediction without a folder: recorded by cohort.discover
        arrays = empty_arrays(settings)
    else:
        arrays = load_patient(task.folder, settings=settings, reader=reader, problems=problems)
    meta = EntryMeta(
        key=task.key,
        counts={name: len(arrays[name]) for name in settings.series},
        problems=tuple(problems.items),
    )
    save_npz(task.out, arrays, meta.to_dict())
    return meta


def current_entry(task: PatientTask) -> PatientRecord | None:
    """The record of the task's entry when its key matches (nothing to convert), else None."""
    meta = read_entry_meta(task.out)
    return PatientRecord(task.name, meta, False, task.files) if meta is not None and meta.key == task.key else None


def convert(task: PatientTask, *, settings: PreprocessSettings, reader: Reader) -> PatientRecord:
    """Convert the task's patient and write its entry."""
    return PatientRecord(task.name, convert_patient(task, settings=settings, reader=reader), True, task.files)


_WORKER: dict[str, object] = {}  # a pool worker's settings and reader (its memo lives for the run)


def init_worker(settings: PreprocessSettings, reader_kind: str) -> None:
    """Set up a pool worker: the settings, its own reader, and Ctrl-C left to the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool
    _WORKER.update(settings=settings, reader=make_reader(reader_kind))
    # Long-lived objects (pydicom's data dictionary and the like) leave the garbage collector's
    # scans, which the many small objects of parsed headers would otherwise trigger over and over.
    gc.freeze()


def work(task: PatientTask) -> PatientRecord:
    """Convert one task in a pool worker set up by :func:`init_worker`."""
    return convert(task, settings=_WORKER["settings"], reader=_WORKER["reader"])  # type: ignore[arg-type]
