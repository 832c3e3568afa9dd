"""The model card: what a models folder holds and how to use it (``train`` writes it, ``predict`` reads it).

``models/model_card.json`` names the zoo model and its parameters, the input kind, the cache's
preprocessing settings (so a raw patient folder is preprocessed as the training cache was), each
fold model's file and the calibration that makes its scores comparable, and the training prevalence
(the neutral score of a patient without usable slices).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from stages.errors import DataError
from stages.io import read_json, write_json
from stages.params import ModelParams
from stages.scoring import Calibration
from stages.settings import PreprocessSettings

CARD_FILE = "model_card.json"


@dataclass(frozen=True)
class FoldModel:
    """One trained model: its file in the models folder and its calibration."""

    file: str
    calibration: Calibration


@dataclass(frozen=True)
class ModelCard:
    """Everything needed to score a patient with a folder of fold models."""

    model: ModelParams
    input_kind: str
    preprocess: PreprocessSettings
    models: tuple[FoldModel, ...]
    train_prevalence: float
    train_patients: int

    def neutral_score(self, pooling: str) -> float:
        """The score of a patient without usable slices: the middle rank, or the training prevalence."""
        return 0.5 if pooling == "rank" else self.train_prevalence

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.model_dump(mode="json"),
            "input_kind": self.input_kind,
            "preprocess": self.preprocess.to_dict(),
            "models": [{"file": m.file, "calibration": m.calibration.to_dict()} for m in self.models],
            "train_prevalence": self.train_prevalence,
            "train_patients": self.train_patients,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelCard:
        return cls(
            model=ModelParams.model_validate(d["model"]),
            input_kind=d["input_kind"],
            preprocess=PreprocessSettings.from_dict(d["preprocess"]),
            models=tuple(FoldModel(m["file"], Calibration.from_dict(m["calibration"])) for m in d["models"]),
            train_prevalence=float(d["train_prevalence"]),
            train_patients=int(d["train_patients"]),
        )


def write_card(folder: Path, card: ModelCard) -> None:
    """``<folder>/model_card.json``, atomically."""
    write_json(folder / CARD_FILE, card.to_dict())


def read_card(models: Path) -> tuple[ModelCard, list[Path]]:
    """The card and model files of a models folder, or of one ``.keras`` file beside its card
    (then the card lists that model only); one-line DataErrors for what is missing."""
    folder = models if models.is_dir() else models.parent
    if not (folder / CARD_FILE).exists():
        raise DataError(folder / CARD_FILE, "model card not found (run `dvc repro train` first)")
    try:
        card = ModelCard.from_dict(read_json(folder / CARD_FILE))
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(folder / CARD_FILE, f"not a model card of this version ({exc})") from None
    if not models.is_dir():
        card = replace(card, models=tuple(m for m in card.models if m.file == models.name))
        if not card.models:
            raise DataError(models, "not listed in its model card")
    files = [folder / m.file for m in card.models]
    missing = [f for f in files if not f.exists()]
    if missing:
        raise DataError(missing[0], "model file not found")
    return card, files
