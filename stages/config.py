"""Reading ``params.yaml``, the single source of configuration."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = Path(os.environ.get("MGMT_PARAMS", "params.yaml"))


def load_params(section: str | None = None, path: Path = PARAMS_FILE) -> dict[str, Any]:
    """Return the whole ``params.yaml`` or one of its top-level sections."""
    with open(path) as fh:
        params = yaml.safe_load(fh)
    return params if section is None else params[section]


def worker_count(requested: int) -> int:
    """Number of worker processes: ``0`` means every available core."""
    if requested > 0:
        return requested
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
