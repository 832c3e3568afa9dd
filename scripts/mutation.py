"""Run mutmut on a copy of the committed tree outside this repository and print the kill rates.

mutmut writes a ``mutants/`` folder beside the code it mutates and runs the tests there. Inside
this repository a mutant can reach git (dvclive stages files) or the pipeline files, so the run
happens in an exported copy of ``HEAD``; uncommitted changes are not mutated.

    python scripts/mutation.py                      # the whole scope (SCOPE), hours on 2 cores
    python scripts/mutation.py --report-only        # the table of the last run
    python scripts/mutation.py --resume             # go on with a stopped run (its mutants not yet run)
    python scripts/mutation.py 'stages.scoring.x_bootstrap_auc__mutmut_*'   # rerun some mutants

The scope is every function of the modules that compute a reported number or decide a rerun, and
the functions of ``train``, ``predict`` and ``data`` that score patients. Left out: each stage's
``main``/``execute``/``options`` (argument parsing and calls, run by the wiring tests and CI's
reproduction check, which are too slow per mutant) and the training input pipeline (``data``'s
loaders and augmentation, shown by the augmentation and learnability tests).
"""

from __future__ import annotations

import argparse
import collections
import fnmatch
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKDIR = Path(tempfile.gettempdir()) / "mgmt-pipeline-mutation"


def _functions(module: str, *names: str) -> tuple[str, ...]:
    return tuple(f"stages.{module}.x_{name}__mutmut_*" for name in names)


SCOPE = (
    *(f"stages.{module}.*" for module in ("scoring", "cv", "cache", "cachekey", "planner", "intensity")),
    *_functions("evaluate", "threshold", "bayes_auc", "slice_auc", "flatten", "evaluate", "patient_means"),
    *_functions("evaluate", "write_outputs"),
    *_functions("fingerprint", "fingerprint", "changes"),
    *_functions("train", "prepare", "fold_summary", "train_split", "cross_validate", "write_outputs"),
    *_functions("predict", "ensemble_scores", "cache_samples", "folder_samples", "patient_folders"),
    *_functions("predict", "predict_folders", "submission"),
    *_functions("data", "samples_from_arrays", "predict_samples", "patient_scores", "predict_patients"),
)
RESULT = re.compile(r"^\s*stages\.(?P<module>\w+)\.(?P<mutant>\S+__mutmut_\d+): (?P<status>.+?)\s*$")


@dataclass(frozen=True)
class Outcome:
    """One mutant's module, name and mutmut status (killed, survived, no tests, timeout...)."""

    module: str
    mutant: str
    status: str


def export_head(*, workdir: Path) -> None:
    """Replace ``workdir`` with the committed tree of this repository (``git archive HEAD``)."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(workdir)], input=archive, check=True)


def sync_tests(*, workdir: Path) -> None:
    """Bring the committed ``tests/`` into a previous run's copy, so that named mutants are rerun
    against the tests added since (mutmut finds the new tests and records what they reach)."""
    archive = subprocess.run(["git", "archive", "HEAD", "tests"], cwd=ROOT, check=True, capture_output=True).stdout
    for target in (workdir, workdir / "mutants"):
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)


def in_scope(name: str, scope: tuple[str, ...] = SCOPE) -> bool:
    """Whether a mutant's full name (``stages.module.x_function__mutmut_N``) matches the scope."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in scope)


def parse_results(text: str) -> list[Outcome]:
    """The outcomes in scope listed by ``mutmut results --all true``."""
    matches = [m for m in map(RESULT.match, text.splitlines()) if m]
    return [Outcome(**m.groupdict()) for m in matches if in_scope(f"stages.{m['module']}.{m['mutant']}")]


def kill_table(outcomes: list[Outcome]) -> str:
    """A Markdown table of mutants, killed, survived, unreached and kill rate per module."""
    by_module: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for outcome in outcomes:
        by_module[outcome.module][outcome.status] += 1
    by_module["**all**"] = sum(by_module.values(), collections.Counter())
    rows = [
        "| module | mutants | killed | survived | timeout | no test reaches it | not run | killed of run |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for module, counts in by_module.items():
        total = sum(counts.values())
        run = total - counts["not checked"]
        rate = f"{counts['killed'] / run:.1%}" if run else "-"
        rows.append(
            f"| {module} | {total} | {counts['killed']} | {counts['survived']} | {counts['timeout']}"
            f" | {counts['no tests']} | {counts['not checked']} | {rate} |"
        )
    return "\n".join(rows)


def results(*, workdir: Path) -> list[Outcome]:
    """The outcomes in scope of the run in ``workdir``."""
    listing = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return parse_results(listing)


def run_mutmut(*, workdir: Path, mutants: list[str], log: Path) -> float:
    """Run ``mutmut run`` in ``workdir`` (its spinner goes to ``log``); return the seconds taken."""
    start = time.monotonic()
    with log.open("w") as out:
        subprocess.run(
            [sys.executable, "-m", "mutmut", "run", *mutants],
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mutants", nargs="*", help="rerun only these mutants of the last run")
    parser.add_argument("--workdir", type=Path, default=WORKDIR, help=f"where the copy lives (default {WORKDIR})")
    parser.add_argument("--report-only", action="store_true", help="print the last run's table, run nothing")
    parser.add_argument("--resume", action="store_true", help="run the last run's mutants not yet run, nothing else")
    args = parser.parse_args()
    if not args.report_only:
        if args.resume:
            waiting = [o for o in results(workdir=args.workdir) if o.status == "not checked"]
            mutants = [f"stages.{o.module}.{o.mutant}" for o in waiting]
        elif args.mutants:
            sync_tests(workdir=args.workdir)
            mutants = args.mutants
        else:
            export_head(workdir=args.workdir)
            mutants = list(SCOPE)
        if mutants:
            seconds = run_mutmut(workdir=args.workdir, mutants=mutants, log=args.workdir / "mutmut.log")
            print(f"mutmut ran {seconds / 60:.1f} min in {args.workdir} (log: {args.workdir / 'mutmut.log'})")
    outcomes = results(workdir=args.workdir)
    if not outcomes:
        sys.exit(f"mutation: no results in {args.workdir}")
    print(kill_table(outcomes))
    print("\nNot killed (of those run):")
    for outcome in outcomes:
        if outcome.status not in {"killed", "not checked"}:
            print(f"- {outcome.status}: stages.{outcome.module}.{outcome.mutant}")


if __name__ == "__main__":
    main()
