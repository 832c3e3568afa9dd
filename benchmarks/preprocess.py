"""Benchmark of the preprocess stage against a naive loop and the decode floor.

    python benchmarks/preprocess.py [--patients 24] [--image-size 256] [--slices 32] [--repeats 3]

Generates a demo cohort (plain axial series, so only the chosen slices need decoding), then
measures, each in a fresh child process so peak RSS is its own:

* ``ours``: ``stages.preprocess.run`` (one read and header parse per file, decode of the kept
  slices only, content hashes for the incremental cache, process pool);
* ``naive``: one process, ``dcmread`` + ``pixel_array`` of every file, ``cv2.resize``, one
  ``np.save`` per slice (the seed notebook's loop);
* ``floor``: one process, ``dcmread`` + ``pixel_array`` of exactly the files ``ours`` keeps;

for three slice selections (every slice; the middle half; the default, every third slice of the
middle half), the peak RSS of ``ours`` on the cohort and on one twice its size, and an incremental
rerun after adding 5% new patients. Speed figures are the median of ``--repeats`` interleaved runs
(this machine's timings vary by tens of percent from minute to minute).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SERIES = ["FLAIR", "T1w", "T1wCE", "T2w"]
SELECTIONS = {
    "every slice": {"middle_fraction": 1.0, "slice_step": 1},
    "middle half": {"middle_fraction": 0.5, "slice_step": 1},
    "default (middle half, every 3rd)": {"middle_fraction": 0.5, "slice_step": 3},
}


def settings(selection: str) -> dict:
    from stages.volume import settings_from_params

    base = {
        "orientation": "axial",
        "img_size": 32,
        "clip_percentiles": [0.5, 99.5],
        "blank_level": 0.1,
        "blank_min_fraction": 0.0,
    }
    return settings_from_params({**base, **SELECTIONS[selection]})


def peak_rss_mb(workers: int = 0) -> float:
    """Peak RSS of this process plus ``workers`` times its largest child's, in MB.

    ``VmHWM`` is this process's own high-water mark (``ru_maxrss`` would also carry the
    launcher's, which Linux keeps across exec); pool workers are counted as a worst case.
    """
    own = next(
        int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:")
    )
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if workers else 0
    return (own + workers * child) / 1024


def dicom_files(root: Path) -> list[Path]:
    """Every ``.dcm`` under ``root``, following the symlinked patient folders of a subset."""
    return sorted(Path(d) / f for d, _, names in os.walk(root, followlinks=True) for f in names if f.endswith(".dcm"))


def measure(kind: str, cohort: Path, out: Path, selection: str, workers: int) -> dict:
    """Run one measurement in this process and return files, seconds and peak RSS."""
    import cv2
    import numpy as np
    import pydicom

    from stages import preprocess
    from stages.volume import Problems, axis_map, choose_slices, series_headers

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    files = dicom_files(cohort)
    if kind == "ours":
        from stages.config import worker_count

        start = time.perf_counter()
        preprocess.run(
            raw_dir=cohort,
            cache_dir=out / "cache",
            state_file=out / "state.json",
            series=SERIES,
            settings=settings(selection),
            exclude=[],
            strict=False,
            workers=workers,
        )
        seconds = time.perf_counter() - start
        return {"files": len(files), "seconds": seconds, "rss_mb": peak_rss_mb(worker_count(workers))}
    if kind == "naive":
        start = time.perf_counter()
        for i, path in enumerate(files):
            img = pydicom.dcmread(path).pixel_array.astype(np.float32)
            np.save(out / f"{i}.npy", cv2.resize(img / max(img.max(), 1), (32, 32)))
        return {"files": len(files), "seconds": time.perf_counter() - start, "rss_mb": peak_rss_mb()}
    # floor: the files our plan decodes, found outside the timed region
    s = settings(selection)
    kept = []
    for series_dir in sorted(p for p in cohort.glob("*/*/*") if p.is_dir()):
        headers, _ = series_headers(series_dir, Problems())
        perm, flips = axis_map(headers[0], s["orientation"])
        idx = choose_slices(len(headers), middle_fraction=s["middle_fraction"], step=s["slice_step"])
        kept += [headers[len(headers) - 1 - i if flips[0] else i].path for i in idx]
    start = time.perf_counter()
    for path in kept:
        pydicom.dcmread(path).pixel_array  # noqa: B018
    return {"files": len(kept), "seconds": time.perf_counter() - start, "rss_mb": peak_rss_mb()}


def median_run(runs: list[dict]) -> dict:
    """The run with the median time."""
    return sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]


def child(kind: str, cohort: Path, out: Path, selection: str, workers: int) -> dict:
    """Run :func:`measure` in a fresh interpreter."""
    cmd = [
        sys.executable,
        __file__,
        "--measure",
        kind,
        "--cohort",
        str(cohort),
        "--out",
        str(out),
        "--selection",
        selection,
        "--workers",
        str(workers),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    os.sync()  # write back this run's output now, not during the next measurement
    time.sleep(1.0)  # and let the kernel's background work settle
    return json.loads(proc.stdout.strip().splitlines()[-1])


def make_cohort(root: Path, *, patients: int, image_size: int, slices: int) -> Path:
    """Write (once) a plain axial demo cohort, in a child process so this launcher stays small."""
    if not (root / "train_labels.csv").exists():
        code = (
            "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
            "from stages.demo import build_cohort; "
            "build_cohort(out_dir=Path(sys.argv[2]), n_train=int(sys.argv[3]), n_test=0, seed=11, "
            "image_size=int(sys.argv[4]), slices=int(sys.argv[5]), signal_strength=1.0, prevalence=0.5, "
            "quirks=False)"
        )
        subprocess.run(
            [sys.executable, "-c", code, str(ROOT), str(root), str(patients), str(image_size), str(slices)],
            check=True,
            capture_output=True,
        )
    return root


def subset(src: Path, dst: Path, n: int) -> Path:
    """A cohort of the first ``n`` training patients of ``src`` (symlinked folders)."""
    shutil.rmtree(dst, ignore_errors=True)
    (dst / "train").mkdir(parents=True)
    ids = sorted(p.name for p in (src / "train").iterdir())[:n]
    for pid in ids:
        os.symlink((src / "train" / pid).resolve(), dst / "train" / pid)
    lines = (src / "train_labels.csv").read_text().splitlines()
    (dst / "train_labels.csv").write_text("\n".join([lines[0]] + [x for x in lines[1:] if x[:5] in ids]) + "\n")
    return dst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=24)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--slices", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure; the median is shown")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out")
    parser.add_argument("--measure", choices=["ours", "naive", "floor"])
    parser.add_argument("--cohort", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--selection", default="every slice")
    parser.add_argument("--incremental", action="store_true")
    parser.add_argument("--growth-base", type=int, default=100, help="patients before the 5%% growth")
    parser.add_argument("--speed-only", action="store_true", help="skip the memory and incremental figures")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.cohort, args.out, args.selection, args.workers)))
        return
    if args.incremental:
        incremental(args.cohort, args.out, args.workers, args.growth_base)
        return

    n = args.patients
    tag = f"{args.image_size}px_{args.slices}sl"  # cohorts of other shapes live side by side
    shape = {"image_size": args.image_size, "slices": args.slices}
    big = make_cohort(args.work / f"cohort_{tag}_{2 * n}", patients=2 * n, **shape)
    small = subset(big, args.work / f"cohort_{tag}_{n}", n)
    cores, python = len(os.sched_getaffinity(0)), sys.version.split()[0]
    print(
        f"machine: {cores} cores, Python {python}; cohort: {n} patients x 4 series x "
        f"{args.slices} slices of {args.image_size}x{args.image_size} ({n * 4 * args.slices} files)"
    )
    for selection in SELECTIONS:
        # interleaved repeats in rotating order, so a slow spell of the machine hits every kind alike
        kinds = ["naive", "floor", "ours"]
        runs: dict[str, list[dict]] = {k: [] for k in kinds}
        for rep in range(args.repeats):
            for k in kinds[rep % 3 :] + kinds[: rep % 3]:
                runs[k].append(child(k, small, args.work / k, selection, args.workers))
        res = {k: median_run(r) for k, r in runs.items()}
        print(f"\n[{selection}] median of {args.repeats} runs")
        for k, r in res.items():
            print(
                f"  {k:6s} {r['files']:6d} files {r['seconds']:7.2f} s {r['files'] / r['seconds']:8.0f} files/s "
                f"peak RSS {r['rss_mb']:6.0f} MB"
            )
        print(
            f"  ours vs naive: {res['naive']['seconds'] / res['ours']['seconds']:.2f}x faster; "
            f"ours vs one-process decode floor: {res['floor']['seconds'] / res['ours']['seconds']:.2f}x"
        )
        best = {k: min(x["seconds"] for x in r) for k, r in runs.items()}
        spread = "; ".join(f"{k} " + " ".join(f"{x['seconds']:.2f}" for x in r) for k, r in runs.items())
        print(f"  all runs (s): {spread}")
        print(f"  best runs: ours vs naive {best['naive'] / best['ours']:.2f}x (noise only ever adds time)")
    if args.speed_only:
        return
    one = child("ours", small, args.work / "ours", "middle half", args.workers)
    two = child("ours", big, args.work / "ours", "middle half", args.workers)
    print(
        f"\n[memory] peak RSS of ours: {one['rss_mb']:.0f} MB for {n} patients, {two['rss_mb']:.0f} MB for {2 * n} "
        f"({two['rss_mb'] / one['rss_mb']:.2f}x)"
    )
    total = args.growth_base * 21 // 20  # the base cohort plus 5%
    grown = make_cohort(args.work / f"cohort_{tag}_{total}", patients=total, **shape)
    cmd = ["--incremental", "--cohort", str(grown), "--out", str(args.work), "--workers", str(args.workers)]
    subprocess.run([sys.executable, __file__, *cmd, "--growth-base", str(args.growth_base)], check=True)


def incremental(big: Path, work: Path, workers: int, base: int) -> None:
    """Convert ``base`` patients of ``big``, add the rest (5% more), time the rerun against the full run."""
    from stages import preprocess

    all_ids = sorted(p.name for p in (big / "train").iterdir())
    cohort = subset(big, work / "cohort_incremental", base)
    out = work / "incremental"
    shutil.rmtree(out, ignore_errors=True)
    kwargs = {
        "cache_dir": out / "cache",
        "state_file": out / "state.json",
        "series": SERIES,
        "settings": settings("middle half"),
        "exclude": [],
        "strict": False,
        "workers": workers,
    }
    start = time.perf_counter()
    preprocess.run(raw_dir=cohort, **kwargs)
    full = time.perf_counter() - start
    grown = subset(big, work / "cohort_incremental", len(all_ids))
    start = time.perf_counter()
    preprocess.run(raw_dir=grown, **kwargs)
    rerun = time.perf_counter() - start
    print(
        f"\n[incremental] full run of {base} patients {full:.2f} s; after adding {len(all_ids) - base} patients "
        f"({(len(all_ids) - base) / base:.0%}) the rerun took {rerun:.2f} s = {rerun / full:.0%} of the full run"
    )


if __name__ == "__main__":
    main()
