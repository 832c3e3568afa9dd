"""What moving work off one machine costs: DVC push and pull through an S3 server, and Ray's overhead.

Needs requirements-cluster.txt. Measures, on this host over 127.0.0.1 (so network-free upper bounds
of the protocol and client costs):

- ``dvc push`` / ``dvc pull`` of a folder of DICOM-sized files (340 kB, the challenge's mean:
  137 GB / 400k files) to an S3 bucket on moto's server: files/s and MB/s;
- Ray: starting a local cluster with the pipeline's worker environment, and the round trip of a
  no-op task (what each fold's task adds to its training time).

    python benchmarks/cluster.py [--files 300]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FILE_BYTES = 340_000


def timed(*args: str, cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def dvc_round_trip(files: int) -> None:
    from tests.s3 import moto_server

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "DVC_NO_ANALYTICS": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
        with moto_server(tmp, bucket="team") as endpoint:
            repo = tmp / "repo"
            data = repo / "raw"
            data.mkdir(parents=True)
            rng = __import__("numpy").random.default_rng(0)
            for i in range(files):
                (data / f"Image-{i}.dcm").write_bytes(rng.integers(0, 4096, FILE_BYTES // 2, dtype="<u2").tobytes())
            for cmd in (
                ("dvc", "init", "-q", "--no-scm"),
                ("dvc", "remote", "add", "-d", "team", "s3://team/dvc"),
                ("dvc", "remote", "modify", "team", "endpointurl", endpoint),
                ("dvc", "add", "-q", "raw"),
            ):
                subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)
            push = timed("dvc", "push", "-q", cwd=repo, env=env)
            shutil.rmtree(repo / ".dvc" / "cache")
            shutil.rmtree(data)
            pull = timed("dvc", "pull", "-q", cwd=repo, env=env)
    mb = files * FILE_BYTES / 1e6
    print(f"S3 (moto, 127.0.0.1): {files} files, {mb:.0f} MB")
    for name, seconds in (("push", push), ("pull", pull)):
        print(f"  dvc {name}: {seconds:.1f} s, {files / seconds:.0f} files/s, {mb / seconds:.1f} MB/s")


def ray_overhead(tasks: int = 20) -> None:
    import ray

    from stages.executors import call, start_ray

    start = time.perf_counter()
    start_ray(num_cpus=2)
    remote = ray.remote(num_cpus=2)(call)
    ray.get(remote.remote(abs, 0))  # a worker started, the package shipped
    first = time.perf_counter() - start
    rounds = []
    for _ in range(tasks):
        t = time.perf_counter()
        ray.get(remote.remote(abs, 0))
        rounds.append(time.perf_counter() - t)
    ray.shutdown()
    print(
        f"Ray (local cluster, 2 CPUs): start and first task {first:.1f} s; "
        f"a no-op task's round trip {1000 * statistics.median(rounds):.1f} ms (median of {tasks})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=300)
    args = parser.parse_args()
    dvc_round_trip(args.files)
    ray_overhead()


if __name__ == "__main__":
    main()
