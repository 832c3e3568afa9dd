"""Process pools for the stages that convert or write many files in parallel (``demo``, ``inventory``,
``preprocess``): workers start from a fork server, and ``0`` workers means every available core.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable
from multiprocessing import forkserver
from multiprocessing.context import BaseContext
from multiprocessing.pool import Pool


def start_worker_server(preload: tuple[str, ...]) -> BaseContext:
    """Start the fork server that pool workers come from, without waiting for it.

    The server imports ``preload`` (the modules of the workers' functions) once, while this process
    goes on with its own work; a server already running keeps its first preload.
    """
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(list(preload))
    forkserver.ensure_running()
    return context


def worker_pool(
    processes: int, *, preload: tuple[str, ...], initializer: Callable | None = None, initargs: tuple = ()
) -> Pool:
    """A process pool whose workers start from a fresh server process, not from a fork of this one.

    Forking a process that runs threads (TensorFlow's, in a test session or a notebook; OpenCV's)
    can copy a held lock into the child and deadlock it; the fork server has only ever imported
    what the workers need.
    """
    return start_worker_server(preload).Pool(processes, initializer, initargs)


def worker_count(requested: int) -> int:
    """Number of worker processes: ``0`` means every available core."""
    if requested > 0:
        return requested
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
