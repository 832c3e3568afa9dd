"""Stage ``report``: a self-contained HTML report that opens with no network, and slice montages.

Writes ``reports/html/index.html`` (the metrics table, the training curves of every fold, the
out-of-fold ROC, precision-recall and confusion matrix, the preprocessing summary and montages,
every chart embedded as an image) and ``reports/html/montage_<series>.png`` (a slice of each of
``report.montage_patients`` training patients as the model sees it, at the patient's most FLAIR-bright
level in every series, captioned with ID and label).
"""

from __future__ import annotations

import base64
import html
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from stages.cache import entry_path, read_settings
from stages.cohort import read_oracle, read_patients
from stages.evaluate import threshold
from stages.io import atomic_write_bytes, read_json, write_text

if TYPE_CHECKING:
    from stages.params import Params, Paths

log = logging.getLogger("report")
CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { padding: 4px 12px; border-bottom: 1px solid #eee;
text-align: left; } th { background: #f5f5f5; } .num { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; } figcaption { color: #555; font-size: 0.9em; }
img { max-width: 100%; } .note { color: #555; }
"""


@dataclass(frozen=True)
class Figure:
    """A chart as PNG bytes with a caption."""

    name: str
    caption: str
    png: bytes


def _pyplot():  # noqa: ANN202 - matplotlib, headless, imported when drawing
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "font.size": 10, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def _png(fig: object) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})  # type: ignore[attr-defined]
    _pyplot().close(fig)
    return buf.getvalue()


def curve_figures(curves: pd.DataFrame) -> list[Figure]:
    """Loss and validation patient AUC per epoch, one colour per fold model."""
    plt = _pyplot()
    figures = []
    for metric, title, ylabel in (
        ("loss", "Loss per epoch (solid: training, dashed: validation patients)", "cross-entropy"),
        ("val_patient_auc", "Patient AUC of the inner validation patients per epoch", "patient AUC"),
    ):
        fig, ax = plt.subplots(figsize=(5.2, 3.4))
        for k, ((r, f), g) in enumerate(curves.groupby(["repeat", "fold"])):
            label = f"fold {f}" if curves["repeat"].nunique() == 1 else f"repeat {r} fold {f}"
            ax.plot(g["epoch"], g[metric], color=f"C{k % 10}", label=label)
            if metric == "loss":
                ax.plot(g["epoch"], g["val_loss"], color=f"C{k % 10}", linestyle="--")
        ax.set(xlabel="epoch", ylabel=ylabel, title=title)
        if metric == "val_patient_auc":
            ax.axhline(0.5, color="grey", linewidth=0.8)
        ax.legend(fontsize=8, ncol=2)
        figures.append(Figure(metric, title, _png(fig)))
    return figures


def outcome_figures(patients: pd.DataFrame, *, pooling: str, oracle: dict[str, float]) -> list[Figure]:
    """ROC and precision-recall of the out-of-fold patient scores, and the confusion matrix."""
    from sklearn.metrics import auc, confusion_matrix, precision_recall_curve, roc_curve

    plt = _pyplot()
    mean = patients.groupby("BraTS21ID").agg(y=("MGMT_value", "first"), p=(pooling, "mean"))
    y, p = mean["y"].to_numpy(), mean["p"].to_numpy()
    fig, ax = plt.subplots(figsize=(4.4, 4.2))
    fpr, tpr, _ = roc_curve(y, p)
    ax.plot(fpr, tpr, label=f"model, AUC {auc(fpr, tpr):.3f}")
    if oracle:
        fo, to, _ = roc_curve(y, [oracle[i] for i in mean.index])
        ax.plot(fo, to, color="grey", linestyle=":", label=f"Bayes-optimal (demo latent), AUC {auc(fo, to):.3f}")
    ax.plot([0, 1], [0, 1], color="lightgrey", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC, out-of-fold patients ({pooling})")
    ax.legend(fontsize=8, loc="lower right")
    figures = [Figure("roc", "ROC of the out-of-fold patient scores", _png(fig))]
    fig, ax = plt.subplots(figsize=(4.4, 4.2))
    precision, recall, _ = precision_recall_curve(y, p)
    ax.plot(recall, precision)
    ax.axhline(y.mean(), color="grey", linewidth=0.8, label=f"prevalence {y.mean():.2f}")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall, out-of-fold patients", ylim=(0, 1.02))
    ax.legend(fontsize=8)
    figures.append(Figure("precision_recall", "Precision-recall of the out-of-fold patient scores", _png(fig)))
    cut = threshold(pooling, float(y.mean()))
    cm = confusion_matrix(y, (p >= cut).astype(int), labels=[0, 1])
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    ax.imshow(cm, cmap="Blues")
    ax.grid(False)
    for (i, j), n in np.ndenumerate(cm):
        ax.text(j, i, str(n), ha="center", va="center", color="white" if n > cm.max() / 2 else "black", fontsize=14)
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["0", "1"], yticklabels=["0", "1"])
    ax.set(xlabel="predicted MGMT", ylabel="actual MGMT", title=f"Confusion matrix at {pooling} score >= {cut:.2f}")
    why = (
        f"the top {y.mean():.0%} of ranks, the prevalence"
        if pooling == "rank"
        else f"a probability at the prevalence, {y.mean():.2f}"
    )
    caption = f"Confusion matrix: patients called positive at a {pooling} score of at least {cut:.2f} ({why})"
    figures.append(Figure("confusion", caption, _png(fig)))
    return figures


def montage_level(arrays: dict[str, np.ndarray], *, series: tuple[str, ...]) -> float | None:
    """The slice position (mm) a patient's montages show: where FLAIR (else the first series with a
    slice) has the most pixels brighter than twice its foreground median, as the oedema around a
    glioblastoma is on FLAIR; the middle slice when nothing is that bright; None without slices."""
    names = [n for n in ("FLAIR", *series) if n in series and len(arrays.get(n, ()))]
    if not names:
        return None
    stack, z = arrays[names[0]], arrays[f"{names[0]}_z"]
    foreground = stack[stack > 0]
    if not foreground.size:
        return float(z[len(z) // 2])
    bright = (stack > 2 * np.median(foreground)).sum(axis=(1, 2))
    return float(z[int(np.argmax(bright))] if bright.max() > 0 else z[len(z) // 2])


def montage_levels(cache_dir: Path, patients: list[str], *, series: tuple[str, ...]) -> dict[str, float | None]:
    """:func:`montage_level` of each training patient."""
    levels = {}
    for pid in patients:
        with np.load(entry_path(cache_dir, f"train/{pid}")) as npz:
            levels[pid] = montage_level({k: npz[k] for k in npz.files}, series=series)
    return levels


def montage(cache_dir: Path, table: pd.DataFrame, *, series: str, levels: dict[str, float | None]) -> bytes:
    """For each patient of ``levels``, the cached slice of ``series`` nearest its level, captioned."""
    plt = _pyplot()
    train = table[table["BraTS21ID"].isin(levels) & (table["split"] == "train")]
    cols = int(np.ceil(np.sqrt(max(1, len(train)))))
    rows = int(np.ceil(len(train) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.15 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (_, r) in zip(axes.ravel(), train.iterrows()):
        with np.load(entry_path(cache_dir, f"train/{r['BraTS21ID']}")) as npz:
            stack, z = npz[series], npz[f"{series}_z"]
        level = levels[r["BraTS21ID"]]
        if len(stack) and level is not None:
            k = int(np.argmin(np.abs(z - level)))
            ax.imshow(stack[k], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.text(0.5, 0.5, "no usable slice", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{r['BraTS21ID']}  MGMT {r['MGMT_value']}", fontsize=9)
    fig.suptitle(f"{series}: each patient at its most FLAIR-bright level", fontsize=11)
    return _png(fig)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def figures_html(figures: list[Figure]) -> str:
    """Figures with captions, side by side."""
    return "".join(
        f"<figure>{_img(f.png, f.caption)}<figcaption>{html.escape(f.caption)}</figcaption></figure>" for f in figures
    )


def _row(name: str, value: object, note: str = "") -> str:
    text = f"{value:.3f}" if isinstance(value, float) else html.escape(str(value))
    return f"<tr><td>{html.escape(name)}</td><td class='num'>{text}</td><td class='note'>{html.escape(note)}</td></tr>"


def metrics_table(metrics: dict, *, pooling: str) -> str:
    """The metrics that matter, each with what it means."""
    rows = [
        _row(
            "patient AUC",
            metrics["patient_auc"],
            f"out-of-fold, {pooling} pooling, mean over repeats: the number to compare",
        ),
        _row(
            "95% interval",
            f"{metrics['patient_auc_ci95_low']:.3f} - {metrics['patient_auc_ci95_high']:.3f}",
            "bootstrap over patients",
        ),
    ]
    if metrics.get("repeats", 1) > 1:
        rows.append(
            _row("sd over repeats", metrics["patient_auc_sd_repeats"], f"{metrics['repeats']} repeats of the CV")
        )
    rows += [
        _row(
            "patient AUC, raw / rank / calibrated",
            " / ".join(f"{metrics[f'patient_auc_{k}']:.3f}" for k in ("raw", "rank", "calibrated")),
            "how folds' scores are pooled",
        ),
        _row(
            "fold AUC mean +/- sd",
            f"{metrics['fold_auc_mean']:.3f} +/- {metrics['fold_auc_sd']:.3f}",
            "within each held-out fold",
        ),
    ]
    if "slice_auc" in metrics:
        rows.append(_row("slice AUC", metrics["slice_auc"], "single slices, not patients"))
    if "bayes_auc" in metrics:
        rows.append(_row("Bayes-optimal AUC", metrics["bayes_auc"], "demo cohort: the best any model could reach here"))
        low, high = metrics["bayes_gap_ci95_low"], metrics["bayes_gap_ci95_high"]
        gap = f"{metrics['bayes_gap']:.3f} (95% CI {low:.3f} to {high:.3f})"
        rows.append(_row("gap to Bayes", gap, "Bayes-optimal minus patient AUC; paired bootstrap over patients"))
    rows.append(_row("patients (positive)", f"{metrics['n_patients']} ({metrics['n_positive']})", "scored out of fold"))
    return "<table><tr><th>metric</th><th>value</th><th>meaning</th></tr>" + "".join(rows) + "</table>"


def folds_table(folds: dict) -> str:
    """One row per fold model: patients, epochs, stopping, collapse, held-out AUC."""
    columns = ("model", "fit/val/held-out", "epochs", "stopped (best)", "collapsed", "held-out AUC")
    head = "<tr>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>"
    rows = []
    for name, f in folds.items():
        n = f["patients"]
        stop = f"{f['stopped_at']} ({f['best_epoch']})" if f["stopped_at"] else "no"
        collapsed = (
            f"yes after {f['attempts']} tries"
            if f["collapsed"]
            else ("no" if f["attempts"] == 1 else f"retried ({f['attempts']})")
        )
        rows.append(
            f"<tr><td>{name}</td><td>{n['fit']}/{n['val']}/{n['held_out']}</td><td class='num'>{f['epochs']}</td>"
            f"<td>{stop}</td><td>{collapsed}</td><td class='num'>{f['held_out_patient_auc_raw']:.3f}</td></tr>"
        )
    return "<table>" + head + "".join(rows) + "</table>"


def page(*, title: str, sections: list[tuple[str, str]]) -> str:
    """A complete HTML document: inline style, no scripts, no external resources."""
    body = "".join(f"<h2>{html.escape(h)}</h2>{content}" for h, content in sections)
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )


@dataclass(frozen=True)
class Written:
    """What :func:`execute` wrote."""

    index: Path
    charts: int
    montages: int


def execute(params: Params, paths: Paths) -> Written:
    """Write the HTML report, its charts and montages to ``paths.report_dir``."""
    out = Path(paths.report_dir)
    pooling = params.cv.pooling
    metrics = read_json(Path(paths.eval_dir) / "details.json")
    folds = read_json(Path(paths.training_log) / "folds.json")
    curves = pd.read_csv(Path(paths.training_log) / "curves.csv")
    patients = pd.read_csv(Path(paths.oof) / "oof_patients.csv", dtype={"BraTS21ID": str})
    table = read_patients(paths.patients)
    settings = read_settings(Path(paths.cache_dir))
    pre = read_json(paths.preprocess_report)
    shown = list(table[table["split"] == "train"]["BraTS21ID"].head(params.report.montage_patients))
    levels = montage_levels(Path(paths.cache_dir), shown, series=tuple(settings.series))
    montages = {s: montage(Path(paths.cache_dir), table, series=s, levels=levels) for s in settings.series}
    for s, png in montages.items():
        atomic_write_bytes(out / f"montage_{s}.png", png)
    training = curve_figures(curves)
    outcome = outcome_figures(patients, pooling=pooling, oracle=read_oracle(Path(params.data.raw_dir)))
    for fig in training + outcome:
        atomic_write_bytes(out / f"{fig.name}.png", fig.png)
    skipped = len(pre["problems"])
    kept = ", ".join(f"{name} {n}" for name, n in pre["slices"].items())
    problems = "".join(f"<li>{html.escape(p['file'])}: {html.escape(p['reason'])}</li>" for p in pre["problems"][:50])
    setup = (
        f"<p>Model <b>{html.escape(params.model.name)}</b> on {', '.join(params.model.series)}; "
        f"{params.cv.folds}-fold patient-grouped CV x {params.cv.repeats} repeat(s); "
        f"images {settings.img_size} px, "
        f"normalisation <b>{settings.normalisation.method}</b>; early stopping {params.train.early_stopping}.</p>"
    )
    sections = [
        ("Results", setup + metrics_table(metrics, pooling=pooling)),
        ("Training", figures_html(training) + folds_table(folds)),
        ("Out-of-fold patient predictions", figures_html(outcome)),
        (
            "Preprocessing",
            f"<p>{pre['patients']['train']} training and {pre['patients']['test']} test patients; "
            f"slices kept: {kept}; {skipped} inputs skipped:</p><ul>{problems}</ul>",
        ),
        (
            "Montages",
            f"<p>What the cache holds; the model reads {', '.join(params.model.series)}. Each patient is shown "
            "at one level in every series: FLAIR's cached slice with the most bright tissue (the oedema around "
            "a tumour), and in each other series the slice nearest it.</p>"
            + "".join(f"<figure>{_img(png, s)}</figure>" for s, png in montages.items()),
        ),
    ]
    write_text(out / "index.html", page(title="mgmt-pipeline report", sections=sections))
    return Written(out / "index.html", charts=len(training) + len(outcome), montages=len(montages))


def main() -> None:
    """Write the report from the outputs of the other stages."""
    from stages.cli import stage

    with stage("report", __doc__) as ctx:
        written = execute(ctx.params, ctx.paths)
    log.info("wrote %s (%d charts, %d montages)", written.index, written.charts, written.montages)


if __name__ == "__main__":
    main()
