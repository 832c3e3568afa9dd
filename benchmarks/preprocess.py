"""Preprocessing speed at equal work against real peers, and the read floor.

    python benchmarks/preprocess.py [--cohort demo|realsize|realsize-brain|realsize-x4|all] [--repeats 3] [--kinds ...]
    pip install -r benchmarks/requirements.txt   # SimpleITK, for the peer

Cohorts (written once into benchmarks/out/, by the project's own generator):

* ``demo``: the default demo cohort (120+30 patients, 48x48, 16 slices per series, mixed planes,
  compressed series and broken files);
* ``realsize``: 9 training patients at the challenge's scale (512x512, 150 slices per series,
  about 300 MB each), same quirks (a third or more of the series sagittal or coronal, some RLE or
  JPEG-LS compressed, the organisers' three faulty patients);
* ``realsize-brain``: the same on brain anatomy (``demo.anatomy: brain``), where a patient's series
  also differ in slice count (112 to 225 slices) and in-plane size (256 to 512, drawn per series),
  and about one in ten is oblique;
* ``realsize-x4``: the ``realsize`` patients four times over under new IDs (hard links, 36
  patients, 21,000 files): the same per-patient work in a run four times as long, to show how the
  workers scale once the pool's fixed start-up is a small part of the run, as on the challenge's
  585 patients.

Every figure is a fresh child process (its own peak RSS) that does the same work: every series
of every patient to the default settings' kept slices (middle half, every 3rd, axial, 32x32):

* ``floor``: read every byte of every file, nothing else (the page-cache read floor);
* ``seed-like``: a seed-notebook loop doing our work: ``dcmread`` of every file, ``pixel_array`` of
  exactly the frames our plan decodes, reformatting where the plane differs, ``cv2.resize`` of the
  kept slices, one ``np.save`` each (the plan is made outside the timed region);
* ``simpleitk``: the peer a top challenge solution used: ``ImageSeriesReader`` and ``DICOMOrient``
  per series (which decode every frame), then the kept slices resized and saved; one thread;
* ``inventory``: the ``inventory`` stage's first scan (read and hash every file, one process),
  which ``dvc repro`` runs before ``preprocess`` and which no peer does;
* ``ours plain, 1 worker``: ``preprocess.run`` with the plain pydicom reader;
* ``ours, 1 worker`` / ``ours, 2 workers``: ``preprocess.run`` as the stage runs it, from an empty
  cache, after the inventory scan (as in the pipeline; its time is the row above).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out"
COHORTS = {
    "demo": {"n_train": 120, "n_test": 30, "seed": 2021, "image_size": 48, "slices": 16},
    "realsize": {"n_train": 9, "n_test": 0, "seed": 2021, "image_size": 512, "slices": 150},
    "realsize-brain": {
        "n_train": 9,
        "n_test": 0,
        "seed": 2021,
        "image_size": 512,
        "min_image_size": 256,
        "slices": 150,
        "anatomy": "brain",
    },
}
KINDS = ("floor", "inventory", "seed-like", "simpleitk", "ours plain, 1 worker", "ours, 1 worker", "ours, 2 workers")
COPIES = {"realsize-x4": ("realsize", 4)}  # cohort -> (cohort it repeats, times)
SIZE = 32
PLANES = {(1, 0, 0, 0, 1, 0): "axial", (1, 0, 0, 0, 0, -1): "coronal", (0, 1, 0, 0, 0, -1): "sagittal"}


def settings():  # noqa: ANN201
    from stages.intensity import Normalisation
    from stages.settings import PreprocessSettings

    return PreprocessSettings(
        series=("FLAIR", "T1w", "T1wCE", "T2w"),
        orientation="axial",
        middle_fraction=0.5,
        slice_step=3,
        img_size=SIZE,
        normalisation=Normalisation("reference", ceiling=3.0),
        blank_level=0.1,
        blank_min_fraction=0.02,
        window="middle",
    )


def cohort(name: str) -> Path:
    """The cohort's folder, generated on first use."""
    root = OUT / f"cohort_{name}"
    if name in COPIES and not (root / "train_labels.csv").exists():
        repeat(cohort(COPIES[name][0]), out=root, times=COPIES[name][1])
    elif not (root / "train_labels.csv").exists():
        from stages.demo import build_cohort

        print(f"writing the {name} cohort to {root} (once) ...", flush=True)
        build_cohort(out_dir=root, signal_strength=1.2, prevalence=0.525, quirks=True, **COHORTS[name])
    return root


def repeat(source: Path, *, out: Path, times: int) -> None:
    """``source``'s training patients ``times`` over, copy k under ID + 2000 k (files hard-linked)."""
    import pandas as pd

    shutil.rmtree(out, ignore_errors=True)
    labels = pd.read_csv(source / "train_labels.csv", dtype=str)
    copies = []
    for k in range(times):
        new = labels.assign(BraTS21ID=[f"{int(pid) + 2000 * k:05d}" for pid in labels["BraTS21ID"]])
        for old, pid in zip(labels["BraTS21ID"], new["BraTS21ID"], strict=True):
            shutil.copytree(source / "train" / old, out / "train" / pid, copy_function=os.link)
        copies.append(new)
    pd.concat(copies).to_csv(out / "train_labels.csv", index=False)


def series_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*/*/*") if p.is_dir())


def all_files(root: Path) -> list[Path]:
    return sorted(Path(d) / f for d, _, names in os.walk(root) for f in names if f.endswith(".dcm"))


def peak_rss_mb() -> float:
    own = next(int(x.split()[1]) for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    import resource

    return (own + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024


def plans(root: Path) -> dict[Path, object]:
    """Our slice plan of every series (made outside the timed regions of the peers)."""
    from stages.dicom import PlainReader
    from stages.errors import DataError, Problems
    from stages.planner import plan_series
    from stages.volume import series_headers

    s, out = settings(), {}
    for d in series_dirs(root):
        headers, _ = series_headers(d, reader=PlainReader(), problems=Problems())
        if headers:
            with contextlib.suppress(DataError):  # an oblique series: skipped by everyone
                out[d] = plan_series(
                    headers, orientation="axial", middle_fraction=s.middle_fraction, slice_step=s.slice_step
                )
    return out


def save_kept(volume, plan, out: Path, stem: str) -> int:  # noqa: ANN001 - numpy arrays
    """Resize the kept target slices of a target-layout volume and save one .npy each."""
    import cv2
    import numpy as np

    for k in plan.keep:
        img = volume[k].astype(np.float32)
        np.save(
            out / f"{stem}_{k}.npy",
            cv2.resize(img / max(float(img.max()), 1.0), (SIZE, SIZE), interpolation=cv2.INTER_AREA),
        )
    return len(plan.keep)


def seed_like(root: Path, out: Path) -> dict:
    import numpy as np
    import pydicom

    from stages.volume import in_plane_layout

    todo = plans(root)
    start = time.perf_counter()
    for i, d in enumerate(series_dirs(root)):
        datasets = {}
        for path in sorted(d.iterdir()):
            try:
                datasets[path] = pydicom.dcmread(path)
            except Exception:  # noqa: BLE001 - broken files are skipped, as ours does
                continue
        plan = todo.get(d)
        if plan is None:
            continue
        try:
            frames = [datasets[plan.headers[j].path].pixel_array.astype(np.float32) for j in plan.decode]
        except Exception:  # noqa: BLE001
            continue
        if plan.reformats:
            volume = in_plane_layout(np.stack(frames), plan.perm, plan.flips)
            volume = np.flip(volume, 0) if plan.flips[0] else volume
        else:
            volume = {
                k: in_plane_layout(f[None], plan.perm, plan.flips)[0] for k, f in zip(range(len(plan.keep)), frames)
            }
            plan = plan.__class__(**{**plan.__dict__, "keep": tuple(range(len(plan.keep)))})
        save_kept(volume, plan, out, f"s{i}")
    return {"seconds": time.perf_counter() - start}


def simpleitk(root: Path, out: Path) -> dict:
    import numpy as np
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    todo = plans(root)
    start = time.perf_counter()
    for i, d in enumerate(series_dirs(root)):
        reader = sitk.ImageSeriesReader()
        try:
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(d)))
            image = sitk.DICOMOrient(reader.Execute(), "LPS")  # array [z, y, x]: our axial layout
        except RuntimeError:  # unreadable series: skipped
            continue
        plan = todo.get(d)
        if plan is not None:
            volume = sitk.GetArrayViewFromImage(image)
            plan = plan.__class__(**{**plan.__dict__, "keep": tuple(k for k in plan.keep if k < len(volume))})
            save_kept(np.asarray(volume), plan, out, f"s{i}")
    return {"seconds": time.perf_counter() - start}


def floor(root: Path, out: Path) -> dict:
    from stages.io import read_whole

    files = all_files(root)
    start = time.perf_counter()
    total = sum(len(read_whole(f)) for f in files)
    return {"seconds": time.perf_counter() - start, "bytes": total}


def ours(root: Path, out: Path, *, workers: int, reader: str) -> dict:
    from stages import preprocess
    from stages.inventory import scan

    items = scan(root, state_db=out / "state.sqlite")  # the inventory stage's work, measured on its own row
    start = time.perf_counter()
    preprocess.run(
        raw_dir=root,
        cache_dir=out / "cache",
        inventory=items,
        settings=settings(),
        workers=workers,
        reader=reader,
    )
    return {"seconds": time.perf_counter() - start}


def inventory(root: Path, out: Path) -> dict:
    from stages.inventory import scan

    start = time.perf_counter()
    scan(root, state_db=out / "state.sqlite")
    return {"seconds": time.perf_counter() - start}


def measure(kind: str, root: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    run = {
        "floor": floor,
        "inventory": inventory,
        "seed-like": seed_like,
        "simpleitk": simpleitk,
        "ours plain, 1 worker": lambda r, o: ours(r, o, workers=1, reader="plain"),
        "ours, 1 worker": lambda r, o: ours(r, o, workers=1, reader="fast"),
        "ours, 2 workers": lambda r, o: ours(r, o, workers=2, reader="fast"),
    }[kind](root, out)
    return {**run, "rss_mb": peak_rss_mb()}


def child(kind: str, root: Path) -> dict:
    cmd = [sys.executable, __file__, "--measure", kind, "--root", str(root)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-2000:]}")
    os.sync()
    time.sleep(1.0)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def describe(root: Path) -> str:
    """Files, size, planes and encodings of a cohort."""
    import pydicom

    files = all_files(root)
    planes, encoded = {}, 0
    for d in series_dirs(root):
        for path in sorted(d.glob("*.dcm")):
            with warnings.catch_warnings():  # the cohort's broken files are meant to be broken
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            if "TransferSyntaxUID" not in ds.file_meta or "ImageOrientationPatient" not in ds:
                continue  # a broken file: look at the next one
            plane = PLANES.get(tuple(round(float(v)) for v in ds.ImageOrientationPatient), "other")
            planes[plane] = planes.get(plane, 0) + 1
            encoded += ds.file_meta.TransferSyntaxUID.is_compressed
            break
    size = sum(f.stat().st_size for f in files)
    return f"{len(files)} files, {size / 1e6:.0f} MB; series: {planes}, {encoded} compressed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", choices=[*COHORTS, *COPIES, "all"], default="all")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure, interleaved; the median is shown")
    parser.add_argument("--kinds", nargs="*", default=list(KINDS), choices=KINDS)
    parser.add_argument("--measure", choices=KINDS)
    parser.add_argument("--root", type=Path)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.root, OUT / "work")))
        return
    print(f"machine: {len(os.sched_getaffinity(0))} cores, Python {sys.version.split()[0]}")
    for name in COHORTS if args.cohort == "all" else [args.cohort]:
        root = cohort(name)
        paths = all_files(root)
        files, megabytes = len(paths), sum(f.stat().st_size for f in paths) / 1e6
        print(f"\n[{name}] {describe(root)}; median of {args.repeats} interleaved runs")
        runs: dict[str, list[dict]] = {k: [] for k in args.kinds}
        for rep in range(args.repeats):
            order = args.kinds[rep % len(args.kinds) :] + args.kinds[: rep % len(args.kinds)]
            for kind in order:
                runs[kind].append(child(kind, root))
        med = {k: sorted(r, key=lambda x: x["seconds"])[len(r) // 2]["seconds"] for k, r in runs.items()}
        for kind, r in runs.items():
            rss = sorted(r, key=lambda x: x["seconds"])[len(r) // 2]["rss_mb"]
            spread = " ".join(f"{x['seconds']:.2f}" for x in r)
            print(
                f"  {kind:22s} {med[kind]:8.2f} s {files / med[kind]:8.0f} files/s {megabytes / med[kind]:6.0f} MB/s"
                f"  peak RSS {rss:6.0f} MB  ({spread})"
            )
        for a, b, what in (
            ("simpleitk", "ours, 1 worker", "ours vs SimpleITK per core"),
            ("ours, 1 worker", "ours, 2 workers", "1 -> 2 workers"),
            ("seed-like", "ours, 1 worker", "ours vs the seed-like loop per core"),
            ("ours plain, 1 worker", "ours, 1 worker", "fast reader vs plain reader"),
            ("ours, 2 workers", "floor", "ours (2 workers) vs the read floor: takes"),
        ):
            if a in med and b in med:
                print(f"  {what}: {med[a] / med[b]:.2f}x")


if __name__ == "__main__":
    main()
