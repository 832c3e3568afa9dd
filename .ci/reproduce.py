"""CI reproducibility check of the default pipeline, run from the root of a clean clone, on any x86-64
CPU with AVX2 (the pipeline pins its numerical environment, ``stages/numerics.py``, so every output is
expected bit-identical to the committed one, whichever CPU made it).

1. ``dvc repro`` runs every stage; the output hashes in ``dvc.lock`` must equal the committed ones
   (``git show HEAD:dvc.lock``), models included, and ``git status --porcelain`` must be empty (the
   metrics, plot data and training curves are committed files);
2. a second ``dvc repro`` runs nothing but the always-run stages, and ``dvc status`` reports
   nothing else;
3. the persistent preprocessing cache and the inventory state are deleted and ``dvc repro --force``
   rebuilds everything from scratch: the same output hashes again, bit-identical metrics;
4. the submission covers ``sample_submission.csv`` with unrounded probabilities.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ALWAYS_RUN = {"fingerprint", "inventory"}  # cheap stages DVC runs every time (always_changed)
METRICS = Path("eval/metrics.json")
DETAILS = Path("eval/details.json")


def run(*cmd: str) -> str:
    """Run a command, echo its output tail, fail CI on a non-zero exit."""
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n", flush=True)
    if proc.returncode:
        sys.exit(f"reproduce: `{' '.join(cmd)}` exited {proc.returncode}")
    return proc.stdout + proc.stderr


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def output_hashes(lock_text: str) -> dict[str, str]:
    """``stage:path -> md5`` of every output in a dvc.lock."""
    lock = yaml.safe_load(lock_text)
    return {
        f"{name}:{out['path']}": out.get("md5", "")
        for name, stage in lock["stages"].items()
        for out in stage.get("outs", [])
    }


def lock_differences(committed: str, reproduced: str) -> list[str]:
    """Outputs whose hash differs (or that exist on one side only)."""
    a, b = output_hashes(committed), output_hashes(reproduced)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def status_problems(status_json: str) -> dict:
    """What ``dvc status --json`` reports beyond the always-run stages being always changed."""
    status = json.loads(status_json or "{}")
    return {k: v for k, v in status.items() if not (k in ALWAYS_RUN and v == ["always changed"])}


def machine() -> str:
    """This CPU's model name and the numerical environment in force."""
    from stages.numerics import PORTABLE, portable

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    pins = ", ".join(f"{k}={v}" for k, v in PORTABLE.items()) if portable() else "none (MGMT_NUMERICS=native)"
    return f"{cpu}; numerical pins: {pins}"


def check_clean(committed: str, when: str) -> None:
    """The lock's outputs equal the committed ones (each listed) and git sees no change."""
    reproduced = Path("dvc.lock").read_text()
    diff = lock_differences(committed, reproduced)
    for key in sorted(output_hashes(reproduced)):
        print(f"  {'DIFFERS' if key in diff else 'bit-identical'}: {key}", flush=True)
    if diff:
        sys.exit(f"reproduce: {when}: outputs differ from the committed dvc.lock: {', '.join(diff)}")
    dirty = run("git", "status", "--porcelain").strip()
    if dirty:
        sys.exit(f"reproduce: {when}: `git status --porcelain` is not empty:\n{dirty}")


def main() -> None:
    """Run the checks; exit non-zero with a one-line reason on the first failure."""
    committed = subprocess.run(["git", "show", "HEAD:dvc.lock"], capture_output=True, text=True).stdout
    if not committed:
        sys.exit("reproduce: no committed dvc.lock to compare with")
    print("reproduce: on", machine(), flush=True)
    ran = stages_run(run("dvc", "repro"))
    print("reproduced stages:", ", ".join(ran), flush=True)
    check_clean(committed, "after `dvc repro`")
    again = [s for s in stages_run(run("dvc", "repro")) if s not in ALWAYS_RUN]
    if again:
        sys.exit(f"reproduce: a second `dvc repro` reran {again}")
    problems = status_problems(run("dvc", "status", "--json").strip().splitlines()[-1])
    if problems:
        sys.exit(f"reproduce: `dvc status` is not clean: {problems}")
    first_metrics = METRICS.read_bytes()
    shutil.rmtree("data/cache")
    Path("data/.inventory.sqlite").unlink(missing_ok=True)
    ran = stages_run(run("dvc", "repro", "--force"))
    print("reproduced from scratch:", ", ".join(ran), flush=True)
    check_clean(committed, "after a from-scratch `dvc repro --force`")
    if METRICS.read_bytes() != first_metrics:
        sys.exit("reproduce: the from-scratch rerun changed the metrics")
    sub = pd.read_csv("submission.csv", dtype={"BraTS21ID": str})
    raw_dir = Path(yaml.safe_load(Path("params.yaml").read_text())["data"]["raw_dir"])
    sample = pd.read_csv(raw_dir / "sample_submission.csv", dtype={"BraTS21ID": str})
    if sorted(sub["BraTS21ID"]) != sorted(sample["BraTS21ID"]) or not sub["MGMT_value"].between(0, 1).all():
        sys.exit("reproduce: submission.csv does not match sample_submission.csv")
    if sub["MGMT_value"].nunique() <= 11:
        sys.exit("reproduce: submission has 11 or fewer distinct values (rounded?)")
    print("reproduce: OK - outputs match the committed dvc.lock, from scratch too, and git status is clean")
    print(DETAILS.read_text())


if __name__ == "__main__":
    main()
