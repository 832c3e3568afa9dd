"""Wiring, tested generically: a stage reruns exactly when something it reads changes.

Each stage's ``execute`` runs in-process on a tiny cohort with a :class:`Recorder` in place of the
validated params, which notes every leaf the stage reads. Then, for every leaf of the schema:
it is results-neutral (and declared for no stage), or ``dvc.yaml`` declares it for exactly the
stages that read it, and changing it changes each of those stages' outputs.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from stages.params import Params, Paths, load_paths
from tests.conftest import tree_digest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("demo", "inventory", "preprocess", "train", "evaluate", "predict", "report")

# Leaves that change how, not what: declared for no stage, so changing them reruns nothing.
NEUTRAL = {
    "preprocess.workers": "process count; tests/test_preprocess.py shows every count writes the same bytes",
    "preprocess.reader": "fast or plain DICOM reader; tests/test_dicom_fast.py shows they agree",
    "train.executor": "this process or Ray tasks; tests/test_executors.py shows they train the same bits",
}
# Declared and read, but acting only in a situation the tiny run cannot stage cheaply.
CONDITIONAL = {
    "train.collapse_retries": "acts only when a fold collapses (tests/test_training.py retries one)",
    "train.distribute": "acts only with two or more GPUs (mirrored); on CPUs every value trains alike",
}

# The tiny run: 30 + 4 patients of 16 px, 2-fold CV, 3 epochs with early stopping on (so that
# every training knob is read).
BASE = {
    "demo": {"n_train": 30, "n_test": 4, "seed": 5, "image_size": 16, "slices": 6, "quirks": True},
    "preprocess": {"img_size": 16, "workers": 1},
    "model": {"name": "mil_cnn", "depth": 4, "width": 4},
    "train": {"epochs": 3, "batch_size": 4, "early_stopping": "patient_auc", "patience": 1, "decay_steps": 4},
    "cv": {"folds": 2},
    "report": {"montage_patients": 4},
}


@dataclass(frozen=True)
class Change:
    """A leaf's other value; ``context`` is applied to both runs (for a leaf that acts only with it)."""

    value: Any
    context: tuple[tuple[str, Any], ...] = ()


ALTERNATIVES: dict[str, Change] = {
    "data.raw_dir": Change("<another cohort>"),
    "demo.n_train": Change(31),
    "demo.n_test": Change(5),
    "demo.seed": Change(6),
    "demo.image_size": Change(20),
    "demo.min_image_size": Change(8),
    "demo.slices": Change(7),
    "demo.signal_strength": Change(0.3),
    "demo.prevalence": Change(0.3),
    "demo.quirks": Change(False),
    "demo.anatomy": Change("phantom"),
    "preprocess.series": Change(("FLAIR", "T1wCE")),
    "preprocess.exclude": Change("<one more patient>"),
    "preprocess.orientation": Change("native"),
    "preprocess.middle_fraction": Change(0.8),
    "preprocess.slice_step": Change(2),
    "preprocess.window": Change("largest_area"),
    "preprocess.img_size": Change(12),
    "preprocess.normalisation": Change("percentile"),
    "preprocess.clip_percentiles": Change((5.0, 95.0), context=(("preprocess.normalisation", "percentile"),)),
    "preprocess.ceiling": Change(2.0),
    "preprocess.blank_level": Change(0.4),
    "preprocess.blank_min_fraction": Change(0.3),
    "preprocess.strict": Change(True),
    "model.name": Change("seed_cnn"),
    "model.series": Change(("FLAIR",)),
    "model.depth": Change(2),
    "model.width": Change(8),
    "train.seed": Change(43),
    "train.epochs": Change(2),
    "train.batch_size": Change(2),
    "train.learning_rate": Change(0.01),
    "train.decay_steps": Change(1),
    "train.decay_rate": Change(0.5, context=(("train.decay_steps", 1),)),
    "train.early_stopping": Change("val_loss"),
    "train.patience": Change(3, context=(("train.learning_rate", 0.05), ("train.epochs", 4))),
    "train.min_epochs": Change(3, context=(("train.patience", 0),)),
    "train.val_fraction": Change(0.35),
    "train.augment": Change(False),
    "train.shuffle_buffer": Change(2),
    "cv.folds": Change(3),
    "cv.seed": Change(43),
    "cv.repeats": Change(2),
    "cv.pooling": Change("calibrated"),
    "report.montage_patients": Change(2),
}


def schema_leaves(model: type[BaseModel] = Params, prefix: str = "") -> list[str]:
    """Every leaf key of the params schema, dotted."""
    leaves = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            leaves += schema_leaves(sub, key + ".")
        else:
            leaves.append(key)
    return leaves


class Recorder:
    """Stands in for a validated params object and notes every leaf read through it."""

    def __init__(self, target: BaseModel, seen: set[str], prefix: str = "") -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_seen", seen)
        object.__setattr__(self, "_prefix", prefix)

    def __getattr__(self, name: str) -> Any:
        target, seen, prefix = self._target, self._seen, self._prefix
        value = getattr(target, name)
        if name in type(target).model_fields:
            key = f"{prefix}{name}"
            if isinstance(value, BaseModel):
                return Recorder(value, seen, key + ".")
            seen.add(key)
        elif name.startswith("model_"):  # model_dump() and friends read every leaf below
            seen.update(schema_leaves(type(target), prefix))
        return value


def declared(stage: str) -> set[str]:
    """The schema leaves ``dvc.yaml`` lists for ``stage`` (a section name stands for its leaves)."""
    entries = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage].get("params", [])
    return {leaf for e in entries for leaf in schema_leaves() if leaf == e or leaf.startswith(e + ".")}


def output_fields(stage: str) -> list[str]:
    """The ``paths.yaml`` keys of a stage's outputs in ``dvc.yaml``."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    text = yaml.safe_dump([spec.get(k, []) for k in ("outs", "metrics", "plots")])
    return sorted(set(re.findall(r"\$\{paths\.(\w+)\}", text)))


def set_leaf(data: dict, key: str, value: Any) -> None:
    section, leaf = key.split(".")
    data[section][leaf] = list(value) if isinstance(value, tuple) else value


def make_params(changes: dict[str, Any], raw_dir: Path) -> Params:
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in BASE.items():
        data[section].update(values)
    data["data"]["raw_dir"] = str(raw_dir)
    for key, value in changes.items():
        set_leaf(data, key, value)
    return Params.model_validate(data)


def outcome(stage: str, params: Params, paths: Paths) -> dict[str, Any]:
    """Run one stage; the content of its outputs, or the error it stopped with."""
    from stages.errors import DataError

    try:
        importlib.import_module(f"stages.{stage}").execute(params, paths)
    except DataError as err:
        return {"error": str(err)}
    return {name: tree_digest(Path(getattr(paths, name))) for name in output_fields(stage)}


@dataclass
class Run:
    """The tiny pipeline run once in ``folder``: what each stage read and produced."""

    folder: Path
    paths: Paths
    reads: dict[str, set[str]]
    outputs: dict[str, dict[str, Any]]

    def redirected(self, stage: str, where: Path) -> Paths:
        """This run's paths with ``stage``'s outputs (and the inventory's state) moved to ``where``."""
        moved = {name: str(where / Path(getattr(self.paths, name)).name) for name in output_fields(stage)}
        return self.paths.model_copy(update={**moved, "state_db": str(where / "state.sqlite")})


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    folder = tmp_path_factory.mktemp("wiring")
    base = load_paths(ROOT / "paths.yaml")
    paths = base.model_copy(update={k: str(folder / v) for k, v in base.model_dump().items()})
    params = make_params({}, Path(paths.demo_dir))
    reads, outputs = {}, {}
    for stage in STAGES:
        reads[stage] = set()
        result = outcome(stage, Recorder(params, reads[stage]), paths)  # type: ignore[arg-type]
        assert "error" not in result, (stage, result)
        outputs[stage] = result
    return Run(folder, paths, reads, outputs)


def test_the_alternatives_cover_every_leaf_that_is_not_neutral():
    assert sorted(ALTERNATIVES) == sorted(set(schema_leaves()) - set(NEUTRAL) - set(CONDITIONAL))


def test_every_stage_depends_on_its_own_code_fingerprint():
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage in STAGES:
        assert f"${{paths.fingerprints}}/{stage}.txt" in spec[stage]["deps"], stage


@pytest.mark.parametrize("stage", STAGES)
def test_dvc_yaml_declares_exactly_the_leaves_a_stage_reads(run, stage):
    read = run.reads[stage]
    assert read - set(NEUTRAL) - declared(stage) == set(), f"{stage} reads undeclared keys: a stale result"
    conditional = {key for key, change in ALTERNATIVES.items() if change.context}  # read in their context only
    assert declared(stage) - read - conditional == set(), f"{stage} declares keys it never reads: needless reruns"


def test_neutral_keys_are_declared_for_no_stage():
    assert not any(declared(stage) & set(NEUTRAL) for stage in STAGES)


def another_cohort(run: Run) -> Path:
    from stages.demo import build_cohort

    where = run.folder / "another"  # the same patients, other images, labels and latent scores
    if not where.exists():
        build_cohort(out_dir=where, **{**make_params({}, where).demo.model_dump(), "signal_strength": 0.4})
    return where


def changed_run(run: Run, stage: str, key: str, where: Path) -> tuple[dict, dict]:
    """Outputs of ``stage`` without and with the change of ``key`` (upstream outputs as in ``run``)."""
    change = ALTERNATIVES[key]
    raw_dir = Path(run.paths.demo_dir)
    context = dict(change.context)
    value = change.value
    if key == "data.raw_dir":
        value = str(another_cohort(run))
    elif key == "preprocess.exclude":
        first = sorted(p.name for p in (raw_dir / "train").iterdir())[0]
        value = (*make_params({}, raw_dir).preprocess.exclude, first)
    if context:
        before = outcome(stage, make_params(context, raw_dir), run.redirected(stage, where / "before"))
    else:
        before = run.outputs[stage]
    after = outcome(stage, make_params({**context, key: value}, raw_dir), run.redirected(stage, where / "after"))
    return before, after


CHEAP = [(s, k) for s in STAGES if s != "train" for k in sorted(set(ALTERNATIVES) & set(declared(s)))]
TRAINING = [("train", k) for k in sorted(set(ALTERNATIVES) & set(declared("train")))]


@pytest.mark.slow
def test_rerunning_a_stage_unchanged_reproduces_its_outputs(run, tmp_path):
    """The control for the test below: with nothing changed, a rerun writes the same bytes."""
    for stage in ("demo", "preprocess", "train", "evaluate", "report"):
        assert (
            outcome(stage, make_params({}, Path(run.paths.demo_dir)), run.redirected(stage, tmp_path / stage))
            == (run.outputs[stage])
        ), stage


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "key"), CHEAP)
def test_every_declared_key_changes_the_stages_outputs(run, tmp_path, stage, key):
    before, after = changed_run(run, stage, key, tmp_path)
    assert before != after


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "key"), TRAINING)
def test_every_declared_training_key_changes_the_models(run, tmp_path, stage, key):
    before, after = changed_run(run, stage, key, tmp_path)
    assert before != after


def config_files(folder: Path, params: Params, paths: Paths) -> list[str]:
    """``--params`` and ``--paths`` options naming files written from ``params`` and ``paths``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    (folder / "paths.yaml").write_text(yaml.safe_dump({"paths": paths.model_dump()}, sort_keys=False))
    return ["--params", str(folder / "params.yaml"), "--paths", str(folder / "paths.yaml")]


def run_main(stage: str, argv: list[str], monkeypatch, capsys) -> str:
    """A stage's ``main()`` in this process; its stderr."""
    monkeypatch.setattr("sys.argv", [stage, *argv])
    importlib.import_module(f"stages.{stage}").main()
    return capsys.readouterr().err


def test_evaluates_summary_line_reports_the_numbers_in_its_files(run, tmp_path, monkeypatch, capsys):
    import json

    paths = run.redirected("evaluate", tmp_path / "out")
    argv = config_files(tmp_path, make_params({}, Path(run.paths.demo_dir)), paths)
    line = run_main("evaluate", argv, monkeypatch, capsys).strip()
    m = json.loads((Path(paths.eval_dir) / "details.json").read_text())
    expected = (
        f"evaluate: patient AUC {m['patient_auc']:.3f} (95% CI {m['patient_auc_ci95_low']:.3f}-"
        f"{m['patient_auc_ci95_high']:.3f}; rank pooling; raw {m['patient_auc_raw']:.3f}, rank "
        f"{m['patient_auc_rank']:.3f}, calibrated {m['patient_auc_calibrated']:.3f}; folds "
        f"{m['fold_auc_mean']:.3f} +/- {m['fold_auc_sd']:.3f}) on {m['n_patients']} patients; "
        f"Bayes-optimal {m['bayes_auc']:.3f}, gap {m['bayes_gap']:.3f} (95% CI {m['bayes_gap_ci95_low']:.3f}-"
        f"{m['bayes_gap_ci95_high']:.3f})"
    )
    assert line == expected


def test_fingerprint_writes_each_stage_once_names_what_changed_and_removes_strays(run, tmp_path, monkeypatch, capsys):
    from stages.fingerprint import STAGES as FINGERPRINTED

    out = tmp_path / "fingerprints"
    paths = run.paths.model_copy(update={"fingerprints": str(out)})
    argv = config_files(tmp_path, make_params({}, Path(run.paths.demo_dir)), paths)
    n = len(FINGERPRINTED)
    first = run_main("fingerprint", argv, monkeypatch, capsys)
    assert first.startswith(f"fingerprint: {n} of {n} stages have new code or libraries: ")
    assert sorted(p.stem for p in out.glob("*.txt")) == sorted(FINGERPRINTED)
    written = {p: p.stat().st_mtime_ns for p in out.glob("*.txt")}
    assert (
        run_main("fingerprint", argv, monkeypatch, capsys)
        == f"fingerprint: code and libraries of all {n} stages unchanged\n"
    )
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.txt")} == written, "unchanged files are not rewritten"
    (out / "train.txt").write_text((out / "train.txt").read_text().replace("module cache ", "module cache 0", 1))
    (out / "retired.txt").write_text("a stage that no longer exists\n")
    third = run_main("fingerprint", argv, monkeypatch, capsys)
    assert third.startswith(f"fingerprint: 1 of {n} stages have new code or libraries: train (")
    assert not (out / "retired.txt").exists()
