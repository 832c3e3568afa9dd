"""The preprocessed cache as its readers see it: the published settings and the entries.

``data/cache/config.json`` publishes the settings every entry was made with and their digest;
``train`` and ``predict`` take the input shape and series from there. Each entry
(``<split>/<id>.npz``, :func:`entry_path`) carries its own key, slice counts and problems in a
``meta.json`` member written atomically with its arrays. What goes into a key is
``stages/cachekey.py``'s business (only ``preprocess`` needs it).

Nothing here imports DICOM or TensorFlow code: reading the cache is cheap.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stages.errors import DataError, Problem
from stages.io import read_json, read_npz_meta
from stages.settings import PreprocessSettings

CONFIG_FILE = "config.json"


def read_settings(cache_dir: Path) -> PreprocessSettings:
    """The settings of a built cache; a one-line DataError when there is none."""
    path = cache_dir / CONFIG_FILE
    if not path.exists():
        raise DataError(path, "no preprocessed cache here (run `dvc repro preprocess` first)")
    return PreprocessSettings.from_dict(read_json(path)["settings"])


def entry_path(cache_dir: Path, name: str) -> Path:
    """The file of entry ``name`` (``train/00012``)."""
    return cache_dir / f"{name}.npz"


@dataclass(frozen=True)
class EntryMeta:
    """What an entry records besides its arrays: its key, slices per series and problems found."""

    key: str
    counts: dict[str, int]
    problems: tuple[Problem, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "counts": self.counts, "problems": [asdict(p) for p in self.problems]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EntryMeta:
        return cls(d["key"], dict(d["counts"]), tuple(Problem(**p) for p in d["problems"]))


def read_entry_meta(path: Path) -> EntryMeta | None:
    """The meta of the entry at ``path``; None when it is missing, unreadable or of an older format."""
    meta = read_npz_meta(path)
    try:
        return EntryMeta.from_dict(meta) if meta is not None else None
    except (KeyError, TypeError):
        return None
