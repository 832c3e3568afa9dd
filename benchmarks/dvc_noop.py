"""How long a no-op ``dvc repro`` / ``dvc status`` takes over a raw tree of the challenge's file count.

    python benchmarks/dvc_noop.py [--files 400000] [--repeats 3]

Writes (once) a synthetic raw tree of ``--files`` small files in the challenge layout
(train/<id>/<series>/Image-N.dcm and train_labels.csv) and two throw-away git+DVC repositories
over it:

* ``directory dep``: a stage that depends on the raw directory itself (DVC stats and looks up
  every file on every ``dvc status``);
* ``inventory``: this project's design: the always-run ``inventory`` stage (stages/inventory.py,
  digests kept in a SQLite state file) writes one small table, and the stage depends on that.

Both are reproduced once; then a no-op ``dvc repro`` and ``dvc status`` are timed (median of
``--repeats``), and, for the inventory design, a repro after one raw file changed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "dvc_noop"
sys.path.insert(0, str(ROOT))
from stages.challenge import SERIES  # noqa: E402

DIRECTORY_DVC_YAML = """stages:
  use:
    cmd: python -c "open('used.txt', 'w').write('ok')"
    deps: [{raw}]
    outs: [used.txt]
"""
INVENTORY_DVC_YAML = """stages:
  inventory:
    cmd: python -m stages.inventory
    always_changed: true
    deps: [{raw}/train_labels.csv]
    outs: [data/inventory.tsv]
  use:
    cmd: python -c "open('used.txt', 'w').write('ok')"
    deps: [data/inventory.tsv]
    outs: [used.txt]
"""


def tree(files: int) -> Path:
    """A raw tree of ``files`` small files in the challenge layout (written once)."""
    raw = OUT / f"raw_{files}"
    if (raw / "train_labels.csv").exists():
        return raw
    shutil.rmtree(raw, ignore_errors=True)
    per_series = 167
    patients = -(-files // (4 * per_series))
    written = 0
    for p in range(patients):
        for s in SERIES:
            d = raw / "train" / f"{p:05d}" / s
            d.mkdir(parents=True)
            for i in range(per_series):
                if written == files:
                    break
                (d / f"Image-{i + 1}.dcm").write_bytes(b"DICM" + f"{p}-{s}-{i}".encode() * 8)
                written += 1
    (raw / "train_labels.csv").write_text("BraTS21ID,MGMT_value\n" + "".join(f"{p},{p % 2}\n" for p in range(patients)))
    return raw


def run(*cmd: str, cwd: Path, env: dict) -> tuple[float, str]:
    """Seconds a command took, and its output."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}")
    return time.perf_counter() - start, proc.stdout + proc.stderr


def sh(*cmd: str, cwd: Path, env: dict) -> float:
    return run(*cmd, cwd=cwd, env=env)[0]


def repo(name: str, dvc_yaml: str, raw: Path, env: dict) -> Path:
    path = OUT / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    (path / "dvc.yaml").write_text(dvc_yaml.format(raw=raw))
    for cmd in (("git", "init", "-q"), ("dvc", "init", "-q"), ("dvc", "config", "core.analytics", "false")):
        sh(*cmd, cwd=path, env=env)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=400_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    raw = tree(args.files)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "PYTHONPATH": str(ROOT),
    }
    print(f"raw tree: {args.files} files in {raw}; {len(os.sched_getaffinity(0))} cores; median of {args.repeats}")
    start = time.perf_counter()
    n = sum(1 for d, _, names in os.walk(raw) for f in names if os.stat(os.path.join(d, f)))
    seconds = time.perf_counter() - start
    print(f"  listing and stat-ing every file in Python (os.walk, os.stat): {seconds:.2f} s ({n} files)")
    for name, template in (("directory dep", DIRECTORY_DVC_YAML), ("inventory", INVENTORY_DVC_YAML)):
        path = repo(name.replace(" ", "_"), template, raw, env)
        if name == "inventory":  # the stage reads params.yaml and paths.yaml like every stage of the project
            shutil.copy(ROOT / "params.yaml", path / "params.yaml")
            text = (path / "params.yaml").read_text().replace("raw_dir: data/demo", f"raw_dir: {raw}")
            (path / "params.yaml").write_text(text)
            shutil.copy(ROOT / "paths.yaml", path / "paths.yaml")
        first = sh("dvc", "repro", cwd=path, env=env)
        repro = statistics.median(sh("dvc", "repro", cwd=path, env=env) for _ in range(args.repeats))
        status = statistics.median(sh("dvc", "status", cwd=path, env=env) for _ in range(args.repeats))
        print(f"  {name:14s} first repro {first:7.1f} s; no-op repro {repro:5.2f} s; dvc status {status:5.2f} s")
        if name == "inventory":
            victim = raw / "train" / "00007" / "T1wCE" / "Image-3.dcm"
            original = victim.read_bytes()
            victim.write_bytes(original + b"changed")
            changed, output = run("dvc", "repro", cwd=path, env=env)
            victim.write_bytes(original)
            rerun = "Running stage 'use'" in output
            print(f"  {'':14s} after changing one raw file: repro {changed:5.2f} s; the dependent stage reran: {rerun}")


if __name__ == "__main__":
    main()
