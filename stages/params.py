"""The parameter schema: ``params.yaml`` (what experiments vary) and ``paths.yaml`` (where files go).

Both files are validated once, when a stage starts, into frozen typed objects; a wrong type,
range, choice or unknown key raises :class:`~stages.errors.ParamError` with one line naming the
key, the value and what is allowed, before any work or deletion.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from stages.challenge import SERIES
from stages.errors import ParamError
from stages.models import MODELS

PARAMS_FILE = "params.yaml"
PATHS_FILE = "paths.yaml"

Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
Float = Annotated[float, Strict()]  # strict floats still accept integers
Str = Annotated[str, Strict(), Field(min_length=1)]
SeriesName = Literal[SERIES]
ModelName = Literal[tuple(MODELS)]  # the zoo's registered names (stages/models.py)
# YAML 1.1 (PyYAML) reads an unquoted `off` as false: accept it as the word it was meant to be
OffSwitch = BeforeValidator(lambda v: "off" if v is False else v)
PatientId = Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, int) else v), Field(pattern=r"^\d{1,5}$")]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _unique(values: tuple) -> tuple:
    if len(set(values)) != len(values):
        raise ValueError(f"{list(values)} lists a value twice")
    return values


class DataParams(_Section):
    raw_dir: Str  # the dataset root: the demo cohort, or an unpacked challenge download


class DemoParams(_Section):
    n_train: Int = Field(ge=10, le=100_000)
    n_test: Int = Field(ge=0, le=100_000)
    seed: Int = Field(ge=0)
    image_size: Int = Field(ge=16, le=1024)
    min_image_size: Int | None = Field(default=None, ge=8, le=1024)
    slices: Int = Field(ge=4, le=1000)
    signal_strength: Float = Field(ge=0, le=10)
    prevalence: Float = Field(gt=0, lt=1)
    quirks: Bool
    anatomy: Literal["brain", "phantom"]

    @model_validator(mode="after")
    def _check(self) -> DemoParams:
        if self.min_image_size is not None and self.min_image_size > self.image_size:
            raise ValueError(f"demo.min_image_size ({self.min_image_size}) exceeds demo.image_size ({self.image_size})")
        return self


class PreprocessParams(_Section):
    series: tuple[SeriesName, ...] = Field(min_length=1)
    exclude: tuple[PatientId, ...]
    orientation: Literal["axial", "coronal", "sagittal", "native"]
    middle_fraction: Float = Field(gt=0, le=1)
    slice_step: Int = Field(ge=1, le=100)
    window: Literal["middle", "largest_area"]
    img_size: Int = Field(ge=8, le=1024)
    normalisation: Literal["percentile", "reference"]
    clip_percentiles: tuple[Float, ...] = Field(min_length=2, max_length=2)
    ceiling: Float = Field(gt=1, le=100)
    blank_level: Float = Field(ge=0, lt=1)
    blank_min_fraction: Float = Field(ge=0, le=1)
    strict: Bool
    workers: Int = Field(ge=0, le=256)
    reader: Literal["fast", "plain"]

    _unique_series = field_validator("series")(_unique)

    @field_validator("clip_percentiles")
    @classmethod
    def _ordered(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not 0 <= value[0] < value[1] <= 100:
            raise ValueError(f"{list(value)} must satisfy 0 <= low < high <= 100")
        return value


class ModelParams(_Section):
    name: ModelName
    series: tuple[SeriesName, ...] = Field(min_length=1)
    depth: Int = Field(ge=1, le=512)
    width: Int = Field(ge=4, le=512)

    _unique_series = field_validator("series")(_unique)


class TrainParams(_Section):
    seed: Int = Field(ge=0)
    epochs: Int = Field(ge=1, le=10_000)
    batch_size: Int = Field(ge=1, le=65_536)
    learning_rate: Float = Field(gt=0, le=10)
    decay_steps: Int = Field(ge=1)
    decay_rate: Float = Field(gt=0, le=1)
    early_stopping: Annotated[Literal["off", "val_loss", "patient_auc"], OffSwitch]
    patience: Int = Field(ge=0, le=10_000)
    min_epochs: Int = Field(ge=0, le=10_000)
    val_fraction: Float = Field(ge=0.05, le=0.5)
    augment: Bool
    shuffle_buffer: Int = Field(ge=1)
    collapse_retries: Int = Field(ge=0, le=10)
    distribute: Annotated[Literal["auto", "off", "mirrored"], OffSwitch]
    executor: Literal["local", "ray"]  # where folds train; results-neutral

    @model_validator(mode="after")
    def _check(self) -> TrainParams:
        if self.min_epochs > self.epochs:
            raise ValueError(f"train.min_epochs ({self.min_epochs}) exceeds train.epochs ({self.epochs})")
        return self


class CVParams(_Section):
    folds: Int = Field(ge=2, le=100)
    seed: Int = Field(ge=0)
    repeats: Int = Field(ge=1, le=100)
    pooling: Literal["raw", "rank", "calibrated"]


class ReportParams(_Section):
    montage_patients: Int = Field(ge=1, le=400)


class Params(_Section):
    """Everything in ``params.yaml``."""

    data: DataParams
    demo: DemoParams
    preprocess: PreprocessParams
    model: ModelParams
    train: TrainParams
    cv: CVParams
    report: ReportParams

    @model_validator(mode="after")
    def _check(self) -> Params:
        missing = [s for s in self.model.series if s not in self.preprocess.series]
        if missing:
            raise ValueError(f"model.series {missing} must be among preprocess.series {list(self.preprocess.series)}")
        return self


class Paths(_Section):
    """Everything in ``paths.yaml``: where each stage reads and writes (relative to the repository)."""

    demo_dir: Str
    inventory: Str
    state_db: Str
    cache_dir: Str
    patients: Str
    preprocess_report: Str
    models_dir: Str
    oof: Str
    training_log: Str
    eval_dir: Str
    submission: Str
    predict_report: Str
    report_dir: Str
    fingerprints: Str


def _first_error(err: ValidationError) -> tuple[str, str]:
    """``(dotted key, one-line reason)`` of the first problem pydantic found."""
    e = err.errors()[0]
    key = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in e["loc"]).replace(".[", "[")
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        return key, "unknown key (check its spelling and section)"
    if e["type"] == "missing":
        return key, "missing (required)"
    if e["type"] == "value_error" and len(e["loc"]) <= 1:  # a cross-field check names its keys itself
        return "", msg
    return key, f"{e['input']!r} is not allowed: {msg[:1].lower()}{msg[1:]}"


def _read_yaml(path: Path) -> Any:
    try:
        with open(path) as fh:
            return yaml.safe_load(fh)
    except OSError as exc:
        raise ParamError(str(path), f"cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ParamError(str(path), f"not valid YAML ({' '.join(str(exc).split())})") from None


def _validate(model: type[BaseModel], data: Any, path: Path, section: str | None = None) -> Any:
    if section is not None:
        data = data.get(section) if isinstance(data, dict) else None
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as err:
        key, reason = _first_error(err)
        dotted = ".".join(k for k in (section, key) if k)
        raise ParamError(f"{path}: {dotted}" if dotted else str(path), reason) from None


def params_file() -> Path:
    """``params.yaml``, or the file named by ``$MGMT_PARAMS``."""
    return Path(os.environ.get("MGMT_PARAMS", PARAMS_FILE))


def paths_file() -> Path:
    """``paths.yaml``, or the file named by ``$MGMT_PATHS``."""
    return Path(os.environ.get("MGMT_PATHS", PATHS_FILE))


def load_params(path: Path | None = None) -> Params:
    """Read and validate ``params.yaml``."""
    path = path or params_file()
    return _validate(Params, _read_yaml(path), path)


def load_paths(path: Path | None = None) -> Paths:
    """Read and validate the ``paths`` section of ``paths.yaml``."""
    path = path or paths_file()
    return _validate(Paths, _read_yaml(path), path, section="paths")
