"""Stage ``preprocess``: DICOM series -> one cached ``.npz`` of square slices per patient.

Incremental and crash-safe: a patient is converted only when its entry's key (file contents,
settings, code, library versions; see ``stages/cachekey.py``) does not match, so an aborted run is
repaired by the next one; entries of patients no longer in the dataset are removed. Writes
``data/cache/`` (entries and ``config.json``), ``data/patients.csv`` (split, ID, label, slices per
series) and ``reports/preprocess.json`` (every skipped input and why). With
``preprocess.strict: true`` the stage fails on the first problem, found now or recorded in a
cached entry.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from stages import cohort
from stages.cache import entry_path
from stages.cachekey import CacheConfig, entry_key, write_config
from stages.cli import progress
from stages.convert import PatientRecord, PatientTask, convert, current_entry, init_worker, work
from stages.dicom_fast import make_reader
from stages.errors import DataError, Problem, Problems
from stages.intensity import Normalisation
from stages.inventory import Item, read_table
from stages.io import remove_partial_files, write_csv, write_json
from stages.params import Params, Paths, PreprocessParams
from stages.pools import start_worker_server, worker_count, worker_pool
from stages.settings import PreprocessSettings

log = logging.getLogger("preprocess")
WORKER_MODULES = ("stages.convert",)  # what the pool workers run


def normalisation_from_params(p: PreprocessParams) -> Normalisation:
    """The normalisation, holding only the knobs its method uses (others change no cache key)."""
    if p.normalisation == "percentile":
        return Normalisation("percentile", clip_percentiles=p.clip_percentiles)
    return Normalisation("reference", ceiling=p.ceiling)


def settings_from_params(p: PreprocessParams) -> PreprocessSettings:
    """The settings that shape cached arrays, from the validated ``preprocess`` section."""
    return PreprocessSettings(
        series=p.series,
        orientation=p.orientation,
        middle_fraction=p.middle_fraction,
        slice_step=p.slice_step,
        img_size=p.img_size,
        normalisation=normalisation_from_params(p),
        blank_level=p.blank_level,
        blank_min_fraction=p.blank_min_fraction,
        window=p.window,
    )


def plan_tasks(
    patients: list[cohort.Patient], inventory: dict[str, Item], *, config_digest: str, cache_dir: Path, root: Path
) -> list[PatientTask]:
    """One task per patient, keyed by the cache config and the inventory digest of its folder."""
    tasks = []
    for p in patients:
        name = f"{p.split}/{p.pid}"
        item = inventory.get(f"{p.split}/{p.folder.name}") if p.folder is not None else None
        if p.folder is not None and item is None:
            raise DataError(p.folder, "not in the inventory (run `dvc repro inventory` for this dataset first)")
        content = item.digest if item is not None else "no folder"
        key = entry_key(config_digest=config_digest, content_digest=content)
        files = item.files if item is not None else 0
        tasks.append(PatientTask(name, p.folder, key, entry_path(cache_dir, name), root, files))
    return tasks


def prune(cache_dir: Path, *, keep: set[str]) -> None:
    """Remove entries of patients not in ``keep``, and files an aborted write left behind."""
    remove_partial_files(cache_dir)
    for path in sorted(cache_dir.glob("*/*.npz")):
        if f"{path.parent.name}/{path.stem}" not in keep:
            path.unlink()
    (cache_dir / "manifest.json").unlink(missing_ok=True)  # the cache format before entries carried keys


def convert_all(
    tasks: list[PatientTask], *, settings: PreprocessSettings, reader: str, workers: int, strict: bool
) -> Iterator[PatientRecord]:
    """Bring every entry up to date (conversions in a process pool), with progress; strict stops at a problem.

    Entries whose key matches are taken as they are, here; only the others go to the workers.
    """
    current = [record for task in tasks if (record := current_entry(task)) is not None]
    done = {r.name for r in current}
    todo = [t for t in tasks if t.name not in done]
    n_workers = min(worker_count(workers), len(todo))
    pool = (
        worker_pool(n_workers, preload=WORKER_MODULES, initializer=init_worker, initargs=(settings, reader))
        if n_workers > 1
        else None
    )
    try:
        if pool is not None:
            converted: Iterable[PatientRecord] = pool.imap(work, todo)
        else:
            local = make_reader(reader)
            converted = (convert(t, settings=settings, reader=local) for t in todo)
        with progress(total=len(tasks), unit="patient", desc="preprocess") as bar:
            for record in itertools.chain(current, converted):
                if strict and record.meta.problems:
                    raise strict_error(record.meta.problems[0])
                bar.update()
                yield record
    finally:
        if pool is not None:
            pool.terminate()


def strict_error(problem: Problem) -> DataError:
    """The error ``preprocess.strict`` stops with."""
    return DataError(problem.file, f"{problem.reason} (preprocess.strict is true)")


def patient_rows(
    patients: list[cohort.Patient], records: dict[str, PatientRecord], series: tuple[str, ...]
) -> list[dict]:
    """Rows of ``data/patients.csv``: split, ID, label and slices per series."""
    rows = []
    for p in sorted(patients, key=lambda p: (p.split, p.pid)):
        counts = records[f"{p.split}/{p.pid}"].meta.counts
        label = "" if p.label is None else p.label
        rows.append({"split": p.split, "BraTS21ID": p.pid, "MGMT_value": label, **{s: counts[s] for s in series}})
    return rows


def build_report(
    rows: list[dict], problems: list[Problem], *, exclude: tuple[str, ...], series: tuple[str, ...]
) -> dict:
    """``reports/preprocess.json``: counts, excluded IDs, patients without slices and every problem."""
    return {
        "patients": {split: sum(r["split"] == split for r in rows) for split in ("train", "test")},
        "excluded": sorted(cohort.normalise_id(e) or str(e) for e in exclude),
        "slices": {name: int(sum(r[name] for r in rows)) for name in series},
        "patients_without_slices": sorted(
            f"{r['split']}/{r['BraTS21ID']}" for r in rows if not any(r[s] for s in series)
        ),
        "problems": [{"file": p.file, "reason": p.reason} for p in sorted(problems)],
    }


@dataclass(frozen=True)
class Outcome:
    """What a run produced: the patient table, the report, and how much work it took."""

    rows: list[dict]
    report: dict
    converted: int
    files: int


def run(
    *,
    raw_dir: Path,
    cache_dir: Path,
    inventory: dict[str, Item],
    settings: PreprocessSettings,
    exclude: tuple[str, ...] = (),
    strict: bool = False,
    workers: int = 0,
    reader: str = "fast",
) -> Outcome:
    """Bring the cache up to date with ``raw_dir``, whose content ``inventory`` describes (the inventory
    stage's table); nothing is deleted unless the dataset is usable."""
    if worker_count(workers) > 1:  # the workers' server boots (~0.5 s of imports) while we plan
        start_worker_server(WORKER_MODULES)
    problems = Problems(root=raw_dir)
    patients = cohort.discover(raw_dir, exclude=exclude, problems=problems)  # refuses an unusable root
    if strict and problems.items:
        raise strict_error(problems.items[0])
    config = CacheConfig(settings)
    tasks = plan_tasks(patients, inventory, config_digest=config.digest, cache_dir=cache_dir, root=raw_dir)
    prune(cache_dir, keep={t.name for t in tasks})
    records = {r.name: r for r in convert_all(tasks, settings=settings, reader=reader, workers=workers, strict=strict)}
    write_config(cache_dir, config)
    rows = patient_rows(patients, records, settings.series)
    all_problems = problems.items + [p for r in records.values() for p in r.meta.problems]
    return Outcome(
        rows=rows,
        report=build_report(rows, all_problems, exclude=exclude, series=settings.series),
        converted=sum(r.converted for r in records.values()),
        files=sum(r.files for r in records.values()),
    )


def execute(params: Params, paths: Paths) -> Outcome:
    """The stage's work for validated parameters and file locations: the cache, the patient table, the report."""
    pp = params.preprocess
    outcome = run(
        raw_dir=Path(params.data.raw_dir),
        cache_dir=Path(paths.cache_dir),
        inventory=read_table(paths.inventory),
        settings=settings_from_params(pp),
        exclude=pp.exclude,
        strict=pp.strict,
        workers=pp.workers,
        reader=pp.reader,
    )
    write_csv(paths.patients, outcome.rows, ["split", "BraTS21ID", "MGMT_value", *pp.series])
    write_json(paths.preprocess_report, outcome.report)
    return outcome


def main() -> None:
    """Run the stage from ``params.yaml``."""
    from stages.cli import stage

    with stage("preprocess", __doc__) as ctx:
        paths = ctx.paths
        start = time.perf_counter()
        outcome = execute(ctx.params, paths)
        elapsed = time.perf_counter() - start
        log.info(
            "%d train / %d test patients; converted %d (%d files) in %.1f s; %d problems recorded (see %s)",
            outcome.report["patients"]["train"],
            outcome.report["patients"]["test"],
            outcome.converted,
            outcome.files,
            elapsed,
            len(outcome.report["problems"]),
            paths.preprocess_report,
        )


if __name__ == "__main__":
    main()
