"""Stage ``predict``: challenge submission for the test patients, or one patient from the CLI.

python -m stages.predict                      # the DVC stage: writes the submission
python -m stages.predict --patient DIR [--model PATH]   # prints one patient's probability
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import keras
import numpy as np

from stages.cohort import read_patients
from stages.config import load_params
from stages.data import predict_patients, sample_loader, samples_from_arrays
from stages.dicom import DataError
from stages.io import read_json, write_csv, write_json
from stages.volume import Problems, load_patient

log = logging.getLogger("predict")
CARD = "model_card.json"


def load_ensemble(model_path: Path) -> tuple[list[keras.Model], dict]:
    """Fold models and their card from a models folder, or one ``.keras`` file beside its card."""
    folder = model_path if model_path.is_dir() else model_path.parent
    if not (folder / CARD).exists():
        raise DataError(folder / CARD, "model card not found (run `dvc repro train` first)")
    card = read_json(folder / CARD)
    files = [folder / name for name in card["models"]] if model_path.is_dir() else [model_path]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise DataError(missing[0], "model file not found")
    return [keras.models.load_model(f, compile=False) for f in files], card


def ensemble_probabilities(
    models: list[keras.Model], paths: list[Path], *, card: dict, batch_size: int
) -> list[float | None]:
    """Mean over fold models of each patient's mean sample probability (None: no samples)."""
    load = sample_loader(
        kind=card["input_kind"], series=list(card["model"]["series"]), depth=int(card["model"]["depth"])
    )
    per_model = [predict_patients(m, paths, load=load, batch_size=batch_size) for m in models]
    out: list[float | None] = []
    for i in range(len(paths)):
        probs = [p[i] for p in per_model]
        out.append(None if len(probs[0]) == 0 else float(np.mean([p.mean() for p in probs])))
    return out


def submission_rows(ids: list[str], probs: list[float | None], *, prevalence: float) -> tuple[list[dict], list[str]]:
    """Rows ``BraTS21ID, MGMT_value`` matched by ID; patients without slices get ``prevalence``."""
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate IDs in the test list")
    fallback = [pid for pid, p in zip(ids, probs) if p is None]
    rows = [{"BraTS21ID": pid, "MGMT_value": prevalence if p is None else p} for pid, p in zip(ids, probs)]
    return rows, fallback


def predict_folder(folder: Path, *, models: list[keras.Model], card: dict) -> float:
    """Probability of MGMT methylation for one patient folder, preprocessed as in training."""
    if not folder.is_dir():
        raise DataError(folder, "not a patient folder")
    settings = dict(card["preprocess"])
    series = settings.pop("series")
    problems = Problems(strict=False, root=folder)
    arrays = load_patient(folder, series=series, problems=problems, **settings)
    x = samples_from_arrays(
        arrays, kind=card["input_kind"], series=list(card["model"]["series"]), depth=int(card["model"]["depth"])
    )
    if len(x) == 0:
        reasons = "; ".join(f"{p['file']}: {p['reason']}" for p in problems.items[:3]) or "all slices blank"
        raise DataError(folder, f"no usable slices for {', '.join(card['model']['series'])} ({reasons})")
    return float(np.mean([m.predict(x, verbose=0)[:, 1].mean() for m in models]))


def main(argv: list[str] | None = None) -> None:
    """Write the submission (no arguments) or print one patient's probability (``--patient``)."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # one predict function per fold model retraces
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patient", type=Path, help="a patient folder holding FLAIR/T1w/T1wCE/T2w series")
    parser.add_argument("--model", type=Path, help="a models folder or one .keras file (default: the pipeline's)")
    args = parser.parse_args(argv)
    params = load_params()
    paths = params["paths"]
    try:
        models, card = load_ensemble(args.model or Path(paths["models_dir"]))
        if args.patient is not None:
            print(f"{predict_folder(args.patient, models=models, card=card):.6f}")
            return
        test = read_patients(paths["patients"])
        ids = test.loc[test["split"] == "test", "BraTS21ID"].tolist()
        files = [Path(paths["cache_dir"]) / "test" / f"{pid}.npz" for pid in ids]
        probs = ensemble_probabilities(models, files, card=card, batch_size=int(params["train"]["batch_size"]))
    except DataError as err:
        sys.exit(f"predict: {err}")
    rows, fallback = submission_rows(ids, probs, prevalence=float(card["train_prevalence"]))
    write_csv(paths["submission"], rows, ["BraTS21ID", "MGMT_value"])
    write_json(
        paths["predict_report"],
        {
            "patients": len(rows),
            "models": len(models),
            "train_prevalence": card["train_prevalence"],
            "patients_without_slices": fallback,
        },
    )
    log.info(
        "wrote %d predictions from %d fold models; %d patients without usable slices got the prevalence",
        len(rows),
        len(models),
        len(fallback),
    )


if __name__ == "__main__":
    main()
