"""Where independent pieces of a stage run (``train.executor``): one after another in this process
(``local``), or as Ray tasks (``ray``) on the cluster ``$RAY_ADDRESS`` names, or on a local one
started for the run.

Either way the results come back in the order given, and they are the same bits: a Ray task runs
the same function in a worker process that starts with the same pinned numerical environment
(:mod:`stages.numerics`) and gets the same seeds, and it is given as many CPUs as the pinned thread
count, so tasks never share cores. The executor decides where, never what, so it is
results-neutral: changing it reruns nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import TypeVar

from stages.codehash import PACKAGE_DIR
from stages.errors import DataError
from stages.numerics import PORTABLE, SWITCH, THREADS

T = TypeVar("T")
R = TypeVar("R")

EXECUTORS = ("local", "ray")


def run_tasks(
    fn: Callable[[T], R], tasks: Sequence[T], *, names: Sequence[str], executor: str, log: Callable[[R], None]
) -> list[R]:
    """``[fn(t) for t in tasks]`` on ``executor``; ``log`` sees each result in order as it is ready.

    A task that fails or whose worker dies stops the run with one line naming it, so nothing
    downstream sees a partial set of results.
    """
    if executor == "local":
        results = []
        for task in tasks:
            results.append(fn(task))
            log(results[-1])
        return results
    if executor == "ray":
        return ray_tasks(fn, tasks, names=names, log=log)
    raise ValueError(f"unknown executor {executor!r} (one of {', '.join(EXECUTORS)})")


def worker_environment() -> dict[str, str]:
    """What a Ray worker's environment needs to compute the same bits as this process."""
    env = {k: os.environ[k] for k in PORTABLE if k in os.environ}
    if SWITCH in os.environ:
        env[SWITCH] = os.environ[SWITCH]
    return env


def start_ray(num_cpus: int | None = None) -> None:
    """Join the cluster at ``$RAY_ADDRESS``, else start a local one with ``num_cpus`` (default: this
    host's cores); its workers get this process's pinned environment and the ``stages`` package."""
    import ray

    from stages.pools import worker_count

    address = os.environ.get("RAY_ADDRESS") or None
    ray.init(
        address=address,
        num_cpus=None if address else num_cpus or max(THREADS, worker_count(0)),
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        configure_logging=True,
        runtime_env={"env_vars": worker_environment(), "py_modules": [str(PACKAGE_DIR)]},
    )


def ray_tasks(fn: Callable[[T], R], tasks: Sequence[T], *, names: Sequence[str], log: Callable[[R], None]) -> list[R]:
    """:func:`run_tasks` on Ray: the cluster at ``$RAY_ADDRESS``, else a local one on this host's cores."""
    import ray
    from ray.exceptions import RayError

    from stages.cli import progress

    start_ray()
    try:
        remote = ray.remote(num_cpus=THREADS, max_retries=0)(call)
        refs = [remote.remote(fn, task) for task in tasks]
        results = []
        with progress(total=len(refs), desc="models trained on Ray", unit="model", leave=False) as bar:
            for name, ref in zip(names, refs):
                try:
                    results.append(ray.get(ref))
                except RayError as err:
                    # no ray.cancel of the others: cancelling a task as it completes aborts the
                    # driver (Ray 2.60, "Tried to complete task that was not pending"); shutdown
                    # stops a local cluster's workers, a remote cluster's finish and are discarded
                    raise DataError(name, f"failed on the Ray cluster: {first_line(err)}") from None
                log(results[-1])
                bar.update()
        return results
    finally:
        ray.shutdown()


def call(fn: Callable[[T], R], task: T) -> R:
    """``fn(task)``: what a Ray task runs (any callable, classes included)."""
    return fn(task)


def first_line(err: BaseException) -> str:
    """The most telling single line of a Ray error: the task's own exception where there is one."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException) and not isinstance(cause, type(err)):
        return f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}".rstrip(": ")
    text = str(err).strip().splitlines()
    return next((line.strip() for line in text if line.strip()), type(err).__name__)
