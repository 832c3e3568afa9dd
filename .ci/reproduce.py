"""CI reproducibility check of the default pipeline (run from the repository root).

1. ``dvc repro`` from a clean clone reproduces every stage;
2. a second ``dvc repro`` runs nothing and ``dvc status`` is clean;
3. the output hashes in the reproduced ``dvc.lock`` equal the committed ones (data, metrics and
   plots; model files are excluded because Keras stamps the save time into them);
4. a forced rerun gives bit-identical metrics and the same output hashes again;
5. the submission covers ``sample_submission.csv`` with unrounded probabilities.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

EXCLUDED = {"models"}  # .keras archives carry their save time
METRICS = Path("dvclive/evaluate/metrics.json")


def run(*cmd: str) -> str:
    """Run a command, echo its output, fail CI on a non-zero exit."""
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n", flush=True)
    if proc.returncode:
        sys.exit(f"reproduce: `{' '.join(cmd)}` exited {proc.returncode}")
    return proc.stdout + proc.stderr


def output_hashes(lock_text: str, excluded: set[str] = EXCLUDED) -> dict[str, str]:
    """``stage:path -> md5`` of every output in a dvc.lock, without the excluded paths."""
    lock = yaml.safe_load(lock_text)
    return {
        f"{name}:{out['path']}": out.get("md5", "")
        for name, stage in lock["stages"].items()
        for out in stage.get("outs", [])
        if out["path"] not in excluded
    }


def lock_differences(committed: str, reproduced: str) -> list[str]:
    """Outputs whose hash differs (or that exist on one side only)."""
    a, b = output_hashes(committed), output_hashes(reproduced)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def main() -> None:
    """Run the checks; exit non-zero with a one-line reason on the first failure."""
    committed = Path("dvc.lock").read_text() if Path("dvc.lock").exists() else None
    if committed is None:
        sys.exit("reproduce: no committed dvc.lock to compare with")
    ran = set(re.findall(r"Running stage '([^']+)'", run("dvc", "repro")))
    print("reproduced stages:", sorted(ran))
    again = re.findall(r"Running stage '([^']+)'", run("dvc", "repro"))
    if again:
        sys.exit(f"reproduce: a second `dvc repro` reran {again}")
    if "up to date" not in run("dvc", "status"):
        sys.exit("reproduce: `dvc status` is not clean after repro")
    diff = lock_differences(committed, Path("dvc.lock").read_text())
    if diff:
        sys.exit(f"reproduce: outputs differ from the committed dvc.lock: {', '.join(diff)}")
    first_metrics = METRICS.read_bytes()
    first_lock = Path("dvc.lock").read_text()
    run("dvc", "repro", "--force")
    if METRICS.read_bytes() != first_metrics:
        sys.exit("reproduce: a forced rerun changed the metrics")
    diff = lock_differences(first_lock, Path("dvc.lock").read_text())
    if diff:
        sys.exit(f"reproduce: a forced rerun changed outputs: {', '.join(diff)}")
    sub = pd.read_csv("submission.csv", dtype={"BraTS21ID": str})
    params = yaml.safe_load(Path("params.yaml").read_text())
    sample = pd.read_csv(Path(params["data"]["raw_dir"]) / "sample_submission.csv", dtype={"BraTS21ID": str})
    if sorted(sub["BraTS21ID"]) != sorted(sample["BraTS21ID"]) or not sub["MGMT_value"].between(0, 1).all():
        sys.exit("reproduce: submission.csv does not match sample_submission.csv")
    if sub["MGMT_value"].nunique() <= 11:
        sys.exit("reproduce: submission has 11 or fewer distinct values (rounded?)")
    print("reproduce: OK - outputs match the committed dvc.lock and reruns are bit-identical")
    print(METRICS.read_text())


if __name__ == "__main__":
    main()
