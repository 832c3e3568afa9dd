"""How long the default ``dvc repro`` takes, stage by stage, from a fresh clone and on a forced rerun.

    python benchmarks/repro_time.py [--repeats 1] [--preset phantom ...]

Clones this repository's committed ``HEAD`` into a temporary folder (a new one each repeat), runs
``dvc repro`` there with this Python environment first on ``PATH``, then ``dvc repro -f`` (every
stage again; the preprocessed cache is reused, as on a user's rerun). Each stage's seconds run
from DVC's ``Running stage`` line to the next one (so DVC's own hashing of a stage's outputs counts
towards it). Prints a markdown table: the median over ``--repeats`` of each stage and of the whole
command, and the patient AUC, which must not depend on the run. ``--preset`` applies presets
(``presets/<name>.yaml``) to the clone's ``params.yaml`` first, e.g. to time the phantom.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE_LINE = re.compile(r"^Running stage '([^']+)'")
AUC_LINE = re.compile(r"^evaluate: patient AUC (\d\.\d+)")


def timed_repro(*args: str, cwd: Path, env: dict) -> tuple[dict[str, float], float, str]:
    """Seconds per stage and in all, and the patient AUC, of one ``dvc repro`` run."""
    start = time.perf_counter()
    marks: list[tuple[str, float]] = []
    auc = "-"
    proc = subprocess.Popen(
        ["dvc", "repro", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if m := STAGE_LINE.match(line):
            marks.append((m.group(1), time.perf_counter()))
        if m := AUC_LINE.match(line):
            auc = m.group(1)
    if proc.wait():
        raise SystemExit(f"dvc repro {' '.join(args)} failed:\n{''.join(lines[-20:])}")
    total = time.perf_counter() - start
    ends = [t for _, t in marks[1:]] + [start + total]
    return {name: end - t for (name, t), end in zip(marks, ends)}, total, auc


def apply_presets(clone: Path, names: list[str]) -> None:
    """Merge the named presets into the clone's ``params.yaml`` (validated against the schema)."""
    import yaml

    sys.path.insert(0, str(ROOT))
    from stages.preset import preset_values, validated

    params = validated(yaml.safe_load((clone / "params.yaml").read_text()), *(preset_values(n) for n in names))
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--preset", nargs="*", default=[], help="presets applied to the clone's params.yaml")
    args = parser.parse_args()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    runs: dict[str, list[tuple[dict[str, float], float, str]]] = {"fresh clone": [], "dvc repro -f": []}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            clone = Path(tmp) / "clone"
            subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
            apply_presets(clone, args.preset)
            runs["fresh clone"].append(timed_repro(cwd=clone, env=env))
            runs["dvc repro -f"].append(timed_repro("-f", cwd=clone, env=env))
    stages = list(runs["fresh clone"][0][0])
    print(f"| run | {' | '.join(stages)} | total | patient AUC |")
    print(f"| --- | {' | '.join('---:' for _ in stages)} | ---: | --- |")
    for name, results in runs.items():
        cells = [f"{statistics.median(r[0].get(s, 0.0) for r in results):.1f}" for s in stages]
        total = statistics.median(r[1] for r in results)
        aucs = "/".join(sorted({r[2] for r in results}))
        print(f"| {name} | {' | '.join(cells)} | {total:.1f} s ({total / 60:.1f} min) | {aucs} |")


if __name__ == "__main__":
    main()
