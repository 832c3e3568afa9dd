"""What every stage's command line shares: ``--help``, parameters validated once, one-line errors,
quiet logs.

A stage's ``main()`` is::

    with stage("name", __doc__) as ctx:      # parses arguments (``--help`` stops here), loads params
        ...                                  # ctx.params, ctx.paths, ctx.args

A :class:`~stages.errors.DataError` or :class:`~stages.errors.ParamError` raised inside ends the
process with exit code 1 or 2 and exactly one line on stderr; Ctrl-C with ``<name>: interrupted``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from stages.errors import DataError, ParamError
from stages.params import Params, Paths, load_params, load_paths, params_file, paths_file

if TYPE_CHECKING:
    from tqdm import tqdm


@dataclass(frozen=True)
class StageContext:
    """What a stage runs with."""

    args: argparse.Namespace
    params: Params
    paths: Paths


def parser_for(name: str, doc: str | None) -> argparse.ArgumentParser:
    """The stage's argument parser with the options every stage has."""
    parser = argparse.ArgumentParser(
        prog=f"python -m stages.{name}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", type=Path, default=None, help=f"parameters file (default: {params_file()})")
    parser.add_argument("--paths", type=Path, default=None, help=f"file locations (default: {paths_file()})")
    return parser


def fail(name: str, message: object, code: int = 1) -> None:
    """Exit with one line on stderr."""
    sys.stderr.flush()
    print(f"{name}: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


@contextlib.contextmanager
def stage(
    name: str,
    doc: str | None,
    *,
    options: Callable[[argparse.ArgumentParser], None] | None = None,
    argv: list[str] | None = None,
) -> Iterator[StageContext]:
    """Run a stage body: arguments first (``--help`` exits here), then params, then the work."""
    parser = parser_for(name, doc)
    if options is not None:
        options(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr, force=True)
    for noisy in ("matplotlib", "PIL", "h5py", "dvclive", "dvc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        yield StageContext(args, load_params(args.params), load_paths(args.paths))
    except ParamError as err:
        fail(name, err, code=2)
    except DataError as err:
        fail(name, err)
    except KeyboardInterrupt:
        fail(name, "interrupted", code=130)


def stderr_is_terminal() -> bool:
    """Whether the user's stderr is a terminal (behind :func:`quiet_tensorflow`'s filter, too)."""
    return os.isatty(_filter.get("original", 2))  # type: ignore[arg-type]


def progress(iterable: Iterable | None = None, **kwargs: object) -> tqdm:
    """A tqdm progress bar on stderr, drawn only when stderr is a terminal."""
    from tqdm import tqdm

    return tqdm(iterable, file=sys.stderr, disable=not stderr_is_terminal(), **kwargs)


# TensorFlow's C++ libraries log through absl before Python can configure anything, ignoring
# TF_CPP_MIN_LOG_LEVEL for some messages; these lines (and only these) are dropped from stderr.
NOISE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|I\d{4} \S+ +\d+ \S+:\d+\]"
    rb"|[WE]\d{4} \S+ +\d+ \S+:\d+\] .*(oneDNN|cuda|CUDA|cuDNN|cuBLAS|cuFFT|TensorRT|TF-TRT|GPU)"
    rb"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.)"
)
_filter: dict[str, object] = {}


def _pump(read_fd: int, write_fd: int) -> None:
    """Copy ``read_fd`` to ``write_fd`` line by line, dropping :data:`NOISE` lines.

    A line's beginning is passed on at once unless it may be noise, so progress bars (which
    rewrite one line) show without delay.
    """
    buf, passing = b"", False
    while chunk := os.read(read_fd, 65536):
        buf += chunk
        out = []
        while (end := buf.find(b"\n")) >= 0:
            line, buf = buf[: end + 1], buf[end + 1 :]
            if passing or not NOISE.match(line):
                out.append(line)
            passing = False
        if buf and (passing or buf[:1] not in b"IWET"):
            out.append(buf)
            buf, passing = b"", True
        if out:
            os.write(write_fd, b"".join(out))
    if buf and not NOISE.match(buf):
        os.write(write_fd, buf)


def quiet_tensorflow() -> None:
    """Silence TensorFlow's start-up and runtime notices; call before importing TensorFlow.

    Sets the environment TensorFlow reads, sends stderr (file descriptor 2, where its C++ code
    writes) through a filter thread for the rest of the process, and lowers the Python loggers.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="keras")
    warnings.filterwarnings("ignore", category=UserWarning, module="tensorflow")
    if _filter:
        return
    sys.stderr.flush()
    original = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    thread = threading.Thread(target=_pump, args=(read_fd, original), name="stderr-filter", daemon=True)
    thread.start()
    _filter.update(original=original, thread=thread)

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last write end: the thread drains it and stops
        thread.join(timeout=2)

    atexit.register(restore)
