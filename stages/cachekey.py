"""What keeps a cache entry fresh: its key, from the patient's files, the settings, the code and the libraries.

A key covers the patient's file contents (the inventory digest of its folder), the settings, the
code that shapes an entry (:data:`CODE_MODULES`, compared by behaviour: comments, docstrings,
formatting and log text do not count, see ``stages/codehash.py``) and the versions of the pinned
libraries that code loads, with Python's ``major.minor`` and the numerical environment. So after an
abort at any moment, or any such change, the next run rebuilds exactly the entries whose key does
not match.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.cache import CONFIG_FILE
from stages.codehash import PACKAGE_DIR, code_digests, libraries_of
from stages.io import json_text, write_json
from stages.numerics import portable
from stages.settings import PreprocessSettings

# Every module whose code shapes a cached array or what an entry records (tested to be exactly the
# stages modules that preprocess runs, less those that only list files).
CODE_MODULES = (
    "cache",
    "cachekey",
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
    "settings",
    "volume",
)


def code_digest(modules: tuple[str, ...] = CODE_MODULES, package_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    """Behaviour digest of each ``stages`` module in ``modules``."""
    return code_digests(modules, package_dir)


def library_versions(modules: tuple[str, ...] = CODE_MODULES) -> dict[str, str]:
    """The pinned libraries ``modules`` load (pydicom's decoder plug-ins included), Python's
    ``major.minor`` and whether the numerical environment is pinned (``stages/numerics.py``)."""
    return {**libraries_of(modules), "numerics": "portable" if portable() else "native"}


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


def entry_key(*, config_digest: str, content_digest: str) -> str:
    """Key of one cache entry: the cache config and the patient's file contents."""
    return hashlib.sha256(f"{config_digest}\n{content_digest}".encode()).hexdigest()
