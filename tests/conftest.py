"""Shared fixtures: tiny demo cohorts written with the real generator."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from stages.demo import build_cohort
from stages.volume import settings_from_params

TINY = {"n_train": 12, "n_test": 3, "seed": 7, "image_size": 32, "slices": 8, "signal_strength": 1.2, "prevalence": 0.5}
PREPROCESS = {
    "orientation": "axial",
    "middle_fraction": 0.5,
    "slice_step": 1,
    "img_size": 16,
    "clip_percentiles": [0.5, 99.5],
    "blank_level": 0.1,
    "blank_min_fraction": 0.02,
}
IDENTIFYING = [b"DEMO^PHANTOM", b"DEMO-PID-", b"19000101", b"20000101", b"DEMO PHANTOM INSTITUTE"]


def tree_digest(root: Path) -> dict[str, str]:
    """Content hash of every file under ``root`` by relative path."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12+3 patient demo cohort with every quirk of the default one (do not modify)."""
    root = tmp_path_factory.mktemp("cohort") / "demo"
    build_cohort(out_dir=root, quirks=True, **TINY)
    return root


@pytest.fixture(scope="session")
def clean_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12+3 patient demo cohort without quirks (do not modify)."""
    root = tmp_path_factory.mktemp("clean") / "demo"
    build_cohort(out_dir=root, quirks=False, **TINY)
    return root


@pytest.fixture
def settings() -> dict:
    """``load_series`` keyword arguments for small test images."""
    return settings_from_params(PREPROCESS)
