"""Stage ``preprocess``: DICOM series -> one cached ``.npz`` of square slices per patient.

The cache is incremental: a patient is converted again only when the content of its files,
the preprocessing parameters or the preprocessing code changed; removed patients are deleted.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pydicom
import xxhash
from tqdm import tqdm

from stages import cohort, dicom, volume
from stages.config import load_params, worker_count
from stages.dicom import DataError, Reader
from stages.io import atomic_write_bytes, read_json, read_with_stat, save_npz, write_csv, write_json
from stages.volume import Problems, load_patient, settings_from_params

log = logging.getLogger("preprocess")
CODE_MODULES = (cohort, dicom, volume)


def hashing_reader(state: dict[str, list]) -> Reader:
    """A file reader that records each file's size, mtime and 128-bit XXH3 digest in ``state``.

    XXH3 catches changed content as surely as a cryptographic hash (nothing here is
    adversarial) at memory speed; SHA-256 cost a third of the work of converting a slice.
    """

    def read(path: Path) -> bytes:
        st, data = read_with_stat(path)
        state[str(path)] = [st.st_size, st.st_mtime_ns, xxhash.xxh3_128_hexdigest(data)]
        return data

    return read


def file_digest(path: str, state: dict[str, list]) -> str:
    """Digest of ``path`` (see :func:`hashing_reader`), reused while its size and mtime are unchanged."""
    st = os.stat(path)
    cached = state.get(path)
    if not (cached and cached[0] == st.st_size and cached[1] == st.st_mtime_ns):
        hashing_reader(state)(Path(path))
    return state[path][2]


def patient_files(folder: Path | None) -> list[str]:
    """Every file under a patient folder, sorted.

    Plain strings from ``os.walk``: with pathlib, listing and sorting cost more than the rest
    of checking an unchanged cohort.
    """
    return sorted(os.path.join(d, name) for d, _, names in os.walk(folder) for name in names) if folder else []


def patient_key(*, files: list[str], folder: str, config_digest: str, state: dict) -> str:
    """Cache key of one patient: its file names (relative to ``folder``) and contents, and the config."""
    h = hashlib.sha256(config_digest.encode())
    for f in files:
        h.update(f"{f[len(folder) + 1 :]}\0{file_digest(f, state)}\n".encode())
    return h.hexdigest()


def config_digest(*, series: list[str], settings: dict) -> str:
    """Digest of everything besides the input files that shapes a patient's cache entry."""
    code = b"".join(Path(m.__file__).read_bytes() for m in CODE_MODULES)
    versions = {"pydicom": pydicom.__version__, "cv2": cv2.__version__, "numpy": np.__version__}
    meta = json.dumps({"series": series, "settings": settings, **versions}, sort_keys=True)
    return hashlib.sha256(code + meta.encode()).hexdigest()


def convert_patient(task: dict, read: Reader = Path.read_bytes) -> dict:
    """Convert one patient folder and write its ``.npz``; returns slice counts and problems."""
    problems = Problems(strict=task["strict"], root=task["root"])
    out = Path(task["out"])
    arrays = {}
    if task["folder"] is not None:
        folder = Path(task["folder"])
        arrays = load_patient(folder, series=task["series"], problems=problems, read=read, **task["settings"])
    counts = {name: int(len(arrays.get(name, ()))) for name in task["series"]}
    if sum(counts.values()):
        save_npz(out, arrays)
    else:
        out.unlink(missing_ok=True)
    return {"counts": counts, "problems": problems.items}


def update_patient(task: dict) -> dict:
    """Worker: convert a patient that is new or whose key changed; return its record and file digests.

    A new patient's files are hashed from the bytes read for converting it, so each file is
    read once; a known patient is hashed first (mostly from the stat cache) to see if it changed.
    """
    folder, files = task["folder"] or "", task["files"]
    state, old = task["state"], task["old"]

    def key() -> str:
        return patient_key(files=files, folder=folder, config_digest=task["config_digest"], state=state)

    if old and key() == old["key"]:
        record = old
    else:
        converted = convert_patient(task, read=hashing_reader(state))
        record = {"key": key(), **converted}
    return {
        "entry": task["entry"],
        "record": record,
        "converted": record is not old,
        "state": state,
        "files": len(files),
    }


def montage(cache_dir: Path, ids: list[str], *, series: str, size: int, columns: int) -> np.ndarray:
    """Grid of each patient's middle slice of ``series`` (uint8), for a quick visual check."""
    tiles = []
    for pid in ids:
        path = cache_dir / "train" / f"{pid}.npz"
        stack = np.load(path)[series] if path.exists() else np.zeros((0, size, size), np.uint8)
        tiles.append(stack[len(stack) // 2] if len(stack) else np.zeros((size, size), np.uint8))
    while len(tiles) % columns:
        tiles.append(np.zeros((size, size), np.uint8))
    rows = [np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)]
    return np.vstack(rows) if rows else np.zeros((size, size), np.uint8)


def run(
    *,
    raw_dir: Path,
    cache_dir: Path,
    state_file: Path,
    series: list[str],
    settings: dict,
    exclude: list[str],
    strict: bool,
    workers: int,
) -> tuple[list[dict], dict]:
    """Bring the cache up to date; return one row per patient and the preprocess report."""
    problems = Problems(strict=strict, root=raw_dir)
    patients = cohort.discover(raw_dir, exclude=exclude, problems=problems)
    manifest_path = cache_dir / "manifest.json"
    manifest = read_json(manifest_path) if manifest_path.exists() else {}
    state = read_json(state_file) if state_file.exists() else {}
    digest = config_digest(series=series, settings=settings)

    entries = {f"{p.split}/{p.pid}": p for p in patients}
    for stale in sorted(set(manifest) - set(entries)):
        (cache_dir / f"{stale}.npz").unlink(missing_ok=True)
        del manifest[stale]

    def tasks() -> Iterator[dict]:
        # a generator: the pool's feeder thread lists each patient's files while workers convert
        for entry, p in entries.items():
            files = patient_files(p.folder)
            yield {
                "entry": entry,
                "old": manifest.get(entry, {}),
                "folder": str(p.folder) if p.folder else None,
                "files": files,
                "state": {f: state[f] for f in files if f in state},
                "config_digest": digest,
                "out": str(cache_dir / f"{entry}.npz"),
                "series": series,
                "settings": settings,
                "strict": strict,
                "root": raw_dir,
            }

    start = time.perf_counter()
    n_workers = min(worker_count(workers), max(1, len(entries)))
    converted, total_files, new_state = 0, 0, {}
    # Long-lived objects (pydicom's data dictionary and the like) leave the garbage collector's
    # scans: the many small objects of parsed headers trigger collections that would otherwise
    # traverse them all, and forked workers would copy the pages those scans touch.
    gc.freeze()
    with tqdm(total=len(entries), unit="patient", desc="preprocess", file=sys.stderr, disable=None) as bar:
        pool = mp.get_context("fork").Pool(n_workers) if n_workers > 1 else None
        try:
            for res in pool.imap(update_patient, tasks()) if pool else map(update_patient, tasks()):
                manifest[res["entry"]] = res["record"]
                new_state.update(res["state"])  # files that disappeared drop out
                converted += res["converted"]
                total_files += res["files"]
                bar.set_postfix_str(f"{total_files / (time.perf_counter() - start):.0f} files/s", refresh=False)
                bar.update()
        finally:
            if pool is not None:
                pool.terminate()
            gc.unfreeze()
    elapsed = time.perf_counter() - start
    write_json(state_file, new_state, indent=None)  # internal, and large for a real cohort
    write_json(manifest_path, dict(sorted(manifest.items())))

    oracle = cohort.read_oracle(raw_dir)
    rows, all_problems = [], list(problems.items)
    for entry, p in sorted(entries.items()):
        rec = manifest[entry]
        all_problems.extend(rec["problems"])
        rows.append(
            {
                "split": p.split,
                "BraTS21ID": p.pid,
                "MGMT_value": "" if p.label is None else p.label,
                "oracle_score": oracle.get(p.pid, ""),
                **rec["counts"],
            }
        )
    all_problems.sort(key=lambda d: (d["file"], d["reason"]))
    report = {
        "patients": {
            "train": sum(r["split"] == "train" for r in rows),
            "test": sum(r["split"] == "test" for r in rows),
        },
        "excluded": sorted(cohort.normalise_id(e) or str(e) for e in exclude),
        "slices": {name: int(sum(r[name] for r in rows)) for name in series},
        "patients_without_slices": sorted(
            f"{r['split']}/{r['BraTS21ID']}" for r in rows if not any(r[name] for name in series)
        ),
        "problems": all_problems,
    }
    log.info(
        "converted %d of %d patients (%d files) in %.1fs, %.0f files/s; %d problems recorded",
        converted,
        len(entries),
        total_files,
        elapsed,
        total_files / max(elapsed, 1e-9),
        len(all_problems),
    )
    return rows, report


def main() -> None:
    """Run the stage from ``params.yaml``."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    params = load_params()
    pp, paths = params["preprocess"], params["paths"]
    try:
        rows, report = run(
            raw_dir=Path(params["data"]["raw_dir"]),
            cache_dir=Path(paths["cache_dir"]),
            state_file=Path(paths["preprocess_state"]),
            series=list(pp["series"]),
            settings=settings_from_params(pp),
            exclude=[str(e) for e in pp["exclude"]],
            strict=bool(pp["strict"]),
            workers=int(pp["workers"]),
        )
    except DataError as err:
        sys.exit(f"preprocess: {err}")
    write_csv(paths["patients"], rows, ["split", "BraTS21ID", "MGMT_value", "oracle_score", *pp["series"]])
    write_json(paths["preprocess_report"], report)
    train_ids = [r["BraTS21ID"] for r in rows if r["split"] == "train"][: int(pp["montage_patients"])]
    montage_dir = Path(paths["montage_dir"])
    for name in pp["series"]:
        grid = montage(
            Path(paths["cache_dir"]),
            train_ids,
            series=name,
            size=int(pp["img_size"]),
            columns=int(np.ceil(np.sqrt(max(1, len(train_ids))))),
        )
        atomic_write_bytes(montage_dir / f"{name}.png", cv2.imencode(".png", grid)[1].tobytes())
    log.info("report: %s patients, %d problems", report["patients"], len(report["problems"]))


if __name__ == "__main__":
    main()
