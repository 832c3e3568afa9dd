"""The preprocessing settings: what shapes every cached array (``params.yaml``, section ``preprocess``).

The cache publishes them (``data/cache/config.json``), its keys cover them, the model card carries
them, so a patient folder is preprocessed for prediction exactly as the training cache was.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from stages.intensity import Normalisation


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
    window: str  # middle | largest_area: where the kept middle_fraction of a stack is centred

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
