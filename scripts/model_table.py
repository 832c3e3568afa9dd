"""The README's model table: out-of-fold patient AUC of every model and normalisation, over CV seeds.

    python scripts/model_table.py [--size default large] [--seeds 42 1 2] [--rows ...] [--norms ...]  # hours

Each cell runs the pipeline's own stage code in this process (demo, preprocess, train, evaluate),
exactly what ``dvc exp run`` with the same parameters runs (the command of every row is printed),
from ``params.yaml`` with the row's changes. Demo cohorts and preprocessed caches are shared
between rows with the same settings. Results go to ``scripts/out/results.jsonl`` as they come,
keyed by every parameter: a rerun skips the cells that have a result, and an edit to ``params.yaml``
reruns the cells it changes. The table of the current parameters is printed as markdown: mean +- sd
over the seeds, beside the permuted-label control, the intensity-quantile probe and the Bayes AUC.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "scripts" / "out"
SIZES = {  # a cohort: params.yaml as it is, or a preset (presets/<name>.yaml)
    "default": {},  # brain anatomy
    "brain": {"demo.anatomy": "brain"},  # the default, named
    "phantom": "phantom",
    "large": "large",
    "realistic": "realistic",
    "null": "null",
}
NORMS = {
    "percentile": {"preprocess.normalisation": "percentile"},
    "reference": {"preprocess.normalisation": "reference"},
}
ROWS = {  # row -> a preset, or changes to params.yaml (the normalisation is added per column)
    "seed preset": "seed",
    "mil_cnn (recommended)": {},
    "mil_cnn, permuted labels": {},
    "seed_cnn": {"model.name": "seed_cnn", "train.batch_size": 32},  # slice models: the seed's batch of 32 slices
    "cnn25d": {"model.name": "cnn25d", "model.series": ["FLAIR", "T1w", "T1wCE", "T2w"], "train.batch_size": 32},
    "resnet3d": {"model.name": "resnet3d"},
    "cnn3d": {"model.name": "cnn3d"},
    "mil_cnn, 16 slices": {"model.depth": 16},  # every kept slice where 8 would skip some
    "mil_cnn, 30 epochs": {"train.epochs": 30},  # for presets that train 20
    "mil_cnn, width 16": {"model.width": 16},
    # where the kept half of each stack sits (presets that keep every slice otherwise)
    "mil_cnn, middle half": {"preprocess.middle_fraction": 0.5, "preprocess.window": "middle"},
    "mil_cnn, half centred on the largest area": {
        "preprocess.middle_fraction": 0.5,
        "preprocess.window": "largest_area",
    },
}
PERMUTED_NORMS = ("reference",)  # the control runs the recommended configuration only


def preset(name: str) -> dict[str, object]:
    from stages.preset import preset_values

    return {f"{s}.{k}": v for s, values in preset_values(name).items() for k, v in values.items()}


def params_with(changes: dict[str, object]):  # noqa: ANN201 - stages.params.Params
    from stages.params import Params

    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in changes.items():
        section, key = dotted.split(".", 1)
        data[section][key] = value
    return Params.model_validate(data)


def key(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def cell_key(params, *, permuted: bool) -> str:  # noqa: ANN001
    """A result's identity: every parameter, so an edit to params.yaml reruns the cells it changes."""
    return key(params.model_dump(mode="json")) + ("-permuted" if permuted else "")


def demo_path(params, *, permuted: bool) -> Path:  # noqa: ANN001
    """Where a cell's demo cohort lives (its labels permuted, or not)."""
    return OUT / f"demo_{key(params.demo.model_dump())}{'_permuted' if permuted else ''}"


def demo_dir(params, *, permuted: bool) -> Path:  # noqa: ANN001
    """:func:`demo_path`, the cohort written there first if missing."""
    from stages.demo import build_cohort

    path = demo_path(params, permuted=False)
    if not (path / "train_labels.csv").exists():
        build_cohort(out_dir=path, **params.demo.model_dump())
    if not permuted:
        return path
    copy = demo_path(params, permuted=True)
    if not (copy / "train_labels.csv").exists():
        import pandas as pd

        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(path, copy, copy_function=lambda s, d: Path(d).hardlink_to(s))
        labels = pd.read_csv(path / "train_labels.csv", dtype=str)
        labels["MGMT_value"] = np.random.default_rng(0).permutation(labels["MGMT_value"].to_numpy())
        (copy / "train_labels.csv").unlink()
        labels.to_csv(copy / "train_labels.csv", index=False)
    return copy


def run_dir(raw: Path, params) -> Path:  # noqa: ANN001
    """Where a cell's stage outputs live."""
    return OUT / "runs" / key([str(raw), params.model_dump(mode="json")])


def seeds_gap(records: list[dict]) -> tuple[float, float, float] | None:
    """The Bayes-optimal AUC minus the seeds' mean patient AUC, with a 95% paired bootstrap interval
    over patients: each seed's out-of-fold scores taken as a repeat of the cross-validation, as
    ``evaluate`` does for ``cv.repeats``. None without the runs' outputs or a latent score."""
    import pandas as pd

    from stages.cohort import read_oracle
    from stages.params import Params
    from stages.scoring import bootstrap_values, interval95

    runs = []
    for r in records:
        params = Params.model_validate(r["params"])
        raw = demo_path(params, permuted="permuted" in r["row"])
        oof = run_dir(raw, params) / "oof" / "oof_patients.csv"
        if not oof.exists():
            return None
        runs.append(pd.read_csv(oof, dtype={"BraTS21ID": str}).assign(repeat=len(runs)))
    oracle = read_oracle(raw)
    if not oracle:
        return None
    patients = pd.concat(runs)
    gap = float(np.mean([r["bayes_auc"] - r["patient_auc"] for r in records]))
    lo, hi = interval95(bootstrap_values(patients, params.cv.pooling, reference=oracle))
    return gap, lo, hi


def run_cell(params, *, permuted: bool = False) -> dict:  # noqa: ANN001
    """Run the pipeline's own stages (inventory, preprocess, train, evaluate) for one configuration,
    sharing the cohort's inventory and each preprocessing's cache between cells; returns the metrics."""
    from stages import evaluate, inventory, preprocess, train
    from stages.params import Paths
    from stages.probe import cache_features, probe_auc

    raw = demo_dir(params, permuted=permuted)
    settings = preprocess.settings_from_params(params.preprocess)
    cache = OUT / f"cache_{key([str(raw), settings.to_dict()])}"
    out = run_dir(raw, params)
    params = params.model_copy(update={"data": params.data.model_copy(update={"raw_dir": str(raw)})})
    shared = {  # per cohort, per cache; the rest per run
        "inventory": str(raw.with_name(raw.name + "_inventory.tsv")),
        "state_db": str(OUT / "state.sqlite"),
        "cache_dir": str(cache / "cache"),
        "patients": str(cache / "patients.csv"),
        "preprocess_report": str(cache / "preprocess.json"),
    }
    paths = Paths(**{f: str(out / f) for f in Paths.model_fields} | shared)
    if not (cache / "patients.csv").exists():
        inventory.execute(params, paths)
        preprocess.execute(params, paths)
    if not (out / "oof" / "oof_patients.csv").exists():
        train.execute(params, paths)
    metrics = evaluate.execute(params, paths)
    import pandas as pd

    table = pd.read_csv(cache / "patients.csv", dtype=str, keep_default_na=False)
    train_rows = table[(table["split"] == "train") & (table["T1wCE"].astype(int) > 0)]
    features = cache_features(cache / "cache", list(train_rows["BraTS21ID"]), series="T1wCE")
    metrics["probe_auc"] = probe_auc(features, train_rows["MGMT_value"].astype(int).to_numpy(), seed=params.cv.seed)
    return {k: v for k, v in metrics.items() if not isinstance(v, dict)}


def command(changes: dict[str, object]) -> str:
    from stages.preset import _flow

    return "dvc exp run " + " ".join(f"-S {k}={_flow(v)}" for k, v in changes.items())


def cells(
    sizes: list[str], seeds: list[int], rows: list[str], norms: list[str]
) -> list[tuple[str, str, str, int, dict]]:
    """Every (size, row, normalisation, seed) and its changes to params.yaml."""
    out = []
    for size in sizes:
        cohort = preset(SIZES[size]) if isinstance(SIZES[size], str) else dict(SIZES[size])
        for row in rows:
            base = preset(ROWS[row]) if isinstance(ROWS[row], str) else dict(ROWS[row])
            if isinstance(ROWS[row], str):
                row_norms = ["preset"]
            else:
                row_norms = list(PERMUTED_NORMS if "permuted" in row else NORMS)
            for norm in (n for n in row_norms if n == "preset" or n in norms):
                for seed in seeds:
                    out.append((size, row, norm, seed, {**cohort, **base, **NORMS.get(norm, {}), "cv.seed": seed}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 1, 2])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--norms", nargs="+", default=list(NORMS), choices=list(NORMS))
    parser.add_argument("--table-only", action="store_true", help="print the table of the results so far")
    args = parser.parse_args()
    from stages.cli import quiet_tensorflow

    quiet_tensorflow()
    OUT.mkdir(parents=True, exist_ok=True)
    results_file = OUT / "results.jsonl"
    done = (
        {json.loads(line)["id"]: json.loads(line) for line in results_file.read_text().splitlines()}
        if results_file.exists()
        else {}
    )
    current = []
    for size, row, norm, seed, changes in cells(args.size, args.seeds, args.rows, args.norms):
        params = params_with(changes)
        cell_id = cell_key(params, permuted="permuted" in row)
        current.append((cell_id, size, row))  # rows with the same parameters share a result
        if cell_id in done or args.table_only:
            continue
        start = time.perf_counter()
        metrics = run_cell(params, permuted="permuted" in row)
        record = {
            "id": cell_id,
            "size": size,
            "row": row,
            "norm": norm,
            "seed": seed,
            "command": command(changes),
            "seconds": round(time.perf_counter() - start),
            **metrics,
            "params": params.model_dump(mode="json"),
        }
        done[cell_id] = record
        with results_file.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        print(
            f"{size} | {row} | {norm} | seed {seed}: patient AUC {metrics['patient_auc']:.3f} ({record['seconds']} s)",
            flush=True,
        )
    print_table([{**done[i], "size": size, "row": row} for i, size, row in current if i in done])


def print_table(records: list[dict]) -> None:
    """Markdown: one line per size, row and normalisation; mean +- sd over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["size"], r["row"], r["norm"]), []).append(r)

    def stat(rs: list[dict], k: str) -> str:
        v = np.array([r[k] for r in rs if k in r])
        return f"{v.mean():.3f} +- {v.std(ddof=1):.3f}" if len(v) > 1 else (f"{v[0]:.3f}" if len(v) else "-")

    columns = ("cohort", "model", "normalisation", "patient AUC (mean +- sd)", "fold AUC mean", "probe", "Bayes")
    print("\n| " + " | ".join((*columns, "gap (95% CI)", "seeds")) + " |")
    print("| --- " * (len(columns) + 2) + "|")
    for (size, row, norm), rs in sorted(
        groups.items(), key=lambda kv: (list(SIZES).index(kv[0][0]), kv[0][1], kv[0][2])
    ):
        cells = [stat(rs, k) for k in ("patient_auc", "fold_auc_mean", "probe_auc", "bayes_auc")]
        gap = seeds_gap(rs) if "permuted" not in row else None
        cells.append("-" if gap is None else "{:.3f} ({:.3f} to {:.3f})".format(*gap))
        print(f"| {size} | {row} | {norm} | {' | '.join(cells)} | {len(rs)} |")


if __name__ == "__main__":
    main()
