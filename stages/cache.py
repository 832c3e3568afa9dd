"""The preprocessed cache: its settings contract, its entries and the keys that keep them fresh.

``data/cache/config.json`` publishes the settings every entry was made with and their digest;
``train`` and ``predict`` take the input shape and series from there. Each entry
(``<split>/<id>.npz``) carries its own key in a ``meta.json`` member written atomically with
its arrays, so after an abort at any moment the next run rebuilds exactly the entries whose key
does not match. A key covers the patient's file contents, the settings, the code that shapes an
entry (compared as syntax trees without docstrings, so comments and formatting do not count) and
the versions of the decoding libraries.

Nothing here imports DICOM or TensorFlow code: reading the cache is cheap.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stages.codehash import PACKAGE_DIR, code_digests
from stages.errors import DataError, Problem
from stages.intensity import Normalisation
from stages.io import json_text, read_json, read_npz_meta, write_json
from stages.numerics import portable

CONFIG_FILE = "config.json"
# Every module whose code shapes a cached array or what an entry records (tested to be exactly the
# stages modules that preprocess imports, less those that only list files or read parameters).
CODE_MODULES = (
    "cache",
    "codehash",
    "convert",
    "dicom",
    "dicom_fast",
    "errors",
    "intensity",
    "io",
    "numerics",
    "planner",
    "preprocess",
    "volume",
)
LIBRARIES = (
    "numpy",
    "opencv-python-headless",
    "pydicom",
    "pylibjpeg",
    "pylibjpeg-libjpeg",
    "pylibjpeg-openjpeg",
    "pylibjpeg-rle",
    "pyjpegls",
)


@dataclass(frozen=True)
class PreprocessSettings:
    """Everything that shapes a patient's cached arrays (``params.yaml``, section ``preprocess``)."""

    series: tuple[str, ...]
    orientation: str
    middle_fraction: float
    slice_step: int
    img_size: int
    normalisation: Normalisation
    blank_level: float
    blank_min_fraction: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        d = asdict(self)
        d["series"] = list(self.series)
        clip = self.normalisation.clip_percentiles
        d["normalisation"]["clip_percentiles"] = None if clip is None else list(clip)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessSettings:
        """Inverse of :meth:`to_dict`."""
        clip = d["normalisation"]["clip_percentiles"]
        norm = {**d["normalisation"], "clip_percentiles": None if clip is None else tuple(clip)}
        return cls(**{**d, "series": tuple(d["series"]), "normalisation": Normalisation(**norm)})


def code_digest(modules: tuple[str, ...] = CODE_MODULES, package_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    """Behaviour digest of each ``stages`` module in ``modules`` (``stages/codehash.py``)."""
    return code_digests(modules, package_dir)


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that decode and resize, Python's ``major.minor`` and
    whether the numerical environment is pinned (``stages/numerics.py``)."""
    versions = {"python": ".".join(map(str, sys.version_info[:2])), "numerics": "portable" if portable() else "native"}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@dataclass(frozen=True)
class CacheConfig:
    """What a cache was made with; ``digest`` goes into every entry's key."""

    settings: PreprocessSettings
    code: dict[str, str] = field(default_factory=code_digest)
    versions: dict[str, str] = field(default_factory=library_versions)

    def to_dict(self) -> dict[str, Any]:
        return {"settings": self.settings.to_dict(), "code": self.code, "versions": self.versions}

    @property
    def digest(self) -> str:
        return hashlib.sha256(json_text(self.to_dict()).encode()).hexdigest()


def write_config(cache_dir: Path, config: CacheConfig) -> None:
    """Publish the cache's settings and their digest (``config.json``)."""
    write_json(cache_dir / CONFIG_FILE, {**config.to_dict(), "digest": config.digest})


def read_settings(cache_dir: Path) -> PreprocessSettings:
    """The settings of a built cache; a one-line DataError when there is none."""
    path = cache_dir / CONFIG_FILE
    if not path.exists():
        raise DataError(path, "no preprocessed cache here (run `dvc repro preprocess` first)")
    return PreprocessSettings.from_dict(read_json(path)["settings"])


def entry_key(*, config_digest: str, content_digest: str) -> str:
    """Key of one cache entry: the cache config and the patient's file contents."""
    return hashlib.sha256(f"{config_digest}\n{content_digest}".encode()).hexdigest()


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
