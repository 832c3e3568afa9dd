"""Stage ``predict``: the challenge submission, or predictions for patient folders from the CLI.

    python -m stages.predict                                 # the DVC stage: writes submission.csv
    python -m stages.predict --patient DIR [--patient DIR]   # prints "BraTS21ID <score>" per patient
    python -m stages.predict --patients-dir DIR --csv out.csv

Every fold model scores a patient, its score is made comparable as in evaluation (``cv.pooling``,
stored in ``models/model_card.json``) and the models' scores are averaged. Patient folders are
preprocessed exactly as the training cache was (the card holds the settings). A patient without
usable slices gets the neutral score (the training prevalence; 0.5 for rank pooling) and is listed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stages.cache import entry_path
from stages.card import ModelCard, read_card
from stages.cohort import normalise_id, read_patients
from stages.errors import DataError
from stages.io import write_csv, write_json

if TYPE_CHECKING:
    import keras

    from stages.params import Params, Paths

log = logging.getLogger("predict")
# what a score is, by pooling: rank pooling gives the percentile among the validation patients
SCORE_NAMES = {"rank": "percentile", "raw": "probability", "calibrated": "probability"}


def ensemble_scores(
    models: list[keras.Model], sample_sets: list[np.ndarray], *, card: ModelCard, pooling: str
) -> list[float | None]:
    """Each patient's score: every model's pooled patient score (see ``stages/scoring.py``), averaged."""
    from stages.data import patient_scores, predict_samples

    per_model = []
    for model, entry in zip(models, card.models):
        raw = patient_scores(predict_samples(model, sample_sets, batch_size=64))
        per_model.append(entry.calibration.apply(raw)[pooling])
    mean = np.mean(per_model, axis=0)
    return [None if len(x) == 0 else float(v) for x, v in zip(sample_sets, mean)]


def cache_samples(files: list[Path], *, card: ModelCard) -> list[np.ndarray]:
    """Model samples of cached patients (empty for a missing entry)."""
    from stages.data import sample_loader

    load = sample_loader(kind=card.input_kind, series=card.model.series, depth=card.model.depth)
    return [load(f) if f.exists() else np.zeros((0,), np.uint8) for f in files]


def folder_samples(folder: Path, *, card: ModelCard) -> tuple[np.ndarray, str]:
    """Model samples of one raw patient folder, preprocessed as the cache was; and why, when none."""
    from stages.data import samples_from_arrays
    from stages.dicom_fast import FastReader
    from stages.errors import Problems
    from stages.volume import load_patient

    # only the series the model reads: the others would cost I/O and fill the note with their problems
    settings = replace(card.preprocess, series=tuple(card.model.series))
    problems = Problems(root=folder)
    arrays = load_patient(folder, settings=settings, reader=FastReader(), problems=problems)
    x = samples_from_arrays(arrays, kind=card.input_kind, series=card.model.series, depth=card.model.depth)
    reasons = "; ".join(f"{p.file}: {p.reason}" for p in problems.items[:3]) or "all slices blank"
    return x, reasons


def patient_folders(patients: list[Path], patients_dir: Path | None) -> list[Path]:
    """The folders to predict, checked before anything heavy is loaded."""
    folders = list(patients)
    if patients_dir is not None:
        if not patients_dir.is_dir():
            raise DataError(patients_dir, "not a folder")
        folders += sorted(p for p in patients_dir.iterdir() if p.is_dir())
    for folder in folders:
        if not folder.is_dir():
            raise DataError(folder, "not a patient folder")
    if not folders:
        raise DataError(patients_dir or ".", "no patient folders found")
    return folders


def load_models(files: list[Path]) -> list[keras.Model]:
    """The fold models; a one-line DataError for a file Keras cannot load."""
    import keras

    from stages import layers  # noqa: F401  (registers the custom layers the files name)

    loaded = []
    for f in files:
        try:
            loaded.append(keras.models.load_model(f, compile=False))
        except (OSError, TypeError, ValueError) as exc:
            raise DataError(f, f"cannot load the model ({exc})") from None
    return loaded


def predict_folders(folders: list[Path], *, card: ModelCard, files: list[Path], pooling: str) -> list[dict]:
    """Rows ``BraTS21ID, score, note`` for patient folders; a DataError if none has usable slices."""
    samples, notes = zip(*(folder_samples(f, card=card) for f in folders))
    if not any(len(x) for x in samples):
        raise DataError(folders[0], f"no usable slices for {', '.join(card.model.series)} ({notes[0]})")
    scores = ensemble_scores(load_models(files), list(samples), card=card, pooling=pooling)
    rows = []
    for folder, score, note in zip(folders, scores, notes):
        pid = normalise_id(folder.name) or folder.name
        value = card.neutral_score(pooling) if score is None else score
        rows.append(
            {"BraTS21ID": pid, "score": value, "note": "" if score is not None else f"no usable slices: {note}"}
        )
    return rows


def submission(
    *, card: ModelCard, files: list[Path], patients_csv: Path, cache_dir: Path, pooling: str
) -> tuple[list[dict], list[str]]:
    """Submission rows for every test patient, matched by ID, and the patients given the neutral score."""
    table = read_patients(patients_csv)
    ids = table.loc[table["split"] == "test", "BraTS21ID"].tolist()
    if len(set(ids)) != len(ids):
        raise DataError(patients_csv, "duplicate test IDs")
    samples = cache_samples([entry_path(cache_dir, f"test/{i}") for i in ids], card=card)
    scores = ensemble_scores(load_models(files), samples, card=card, pooling=pooling)
    fallback = [pid for pid, s in zip(ids, scores) if s is None]
    neutral = card.neutral_score(pooling)
    rows = [{"BraTS21ID": pid, "MGMT_value": neutral if s is None else s} for pid, s in zip(ids, scores)]
    return rows, fallback


def execute(params: Params, paths: Paths, *, card: ModelCard | None = None, files: list[Path] | None = None) -> dict:
    """Write the submission for the test patients in ``paths.patients`` with the models in
    ``paths.models_dir`` (or ``card``/``files`` already read); returns the predict report."""
    if card is None or files is None:
        card, files = read_card(Path(paths.models_dir))
    pooling = params.cv.pooling
    rows, fallback = submission(
        card=card, files=files, patients_csv=Path(paths.patients), cache_dir=Path(paths.cache_dir), pooling=pooling
    )
    write_csv(paths.submission, rows, ["BraTS21ID", "MGMT_value"])
    report = {
        "patients": len(rows),
        "models": len(files),
        "pooling": pooling,
        "neutral_score": card.neutral_score(pooling),
        "patients_without_slices": fallback,
    }
    write_json(paths.predict_report, report)
    return report


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--patient", type=Path, action="append", default=[], help="a patient folder (repeatable)")
    parser.add_argument("--patients-dir", type=Path, help="a folder of patient folders")
    parser.add_argument("--model", type=Path, help="a models folder or one .keras file (default: the pipeline's)")
    parser.add_argument("--csv", type=Path, help="also write the table to this CSV file")


def main() -> None:
    """Write the submission (no folders given) or print predictions for patient folders."""
    from stages.cli import quiet_tensorflow, stage

    with stage("predict", __doc__, options=options) as ctx:
        args, paths = ctx.args, ctx.paths
        card, files = read_card(args.model or Path(paths.models_dir))
        folders = patient_folders(args.patient, args.patients_dir) if args.patient or args.patients_dir else None
        quiet_tensorflow()  # inputs are checked: now TensorFlow may load
        if folders is not None:
            rows = predict_folders(folders, card=card, files=files, pooling=ctx.params.cv.pooling)
            name = SCORE_NAMES[ctx.params.cv.pooling]
            print(f"BraTS21ID {name}")
            for r in rows:
                print(f"{r['BraTS21ID']} {r['score']:.6f}" + (f"  ({r['note']})" if r["note"] else ""))
            if args.csv:
                table = [{"BraTS21ID": r["BraTS21ID"], name: r["score"], "note": r["note"]} for r in rows]
                write_csv(args.csv, table, ["BraTS21ID", name, "note"])
            sys.stdout.flush()
            return
        report = execute(ctx.params, paths, card=card, files=files)
        log.info(
            "wrote %d predictions from %d models; %d patients without usable slices got the neutral score",
            report["patients"],
            report["models"],
            len(report["patients_without_slices"]),
        )


if __name__ == "__main__":
    main()
