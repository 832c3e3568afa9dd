"""Errors that name one input, and the record of inputs skipped: the bottom of the house.

Stages turn a :class:`DataError` or :class:`ParamError` into a one-line message and a non-zero
exit instead of a traceback; readers record what they skip in :class:`Problems`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


def one_line(text: object, limit: int = 300) -> str:
    """``text`` with its whitespace collapsed to single spaces, cut at ``limit`` characters."""
    return " ".join(str(text).split())[:limit]


class DataError(Exception):
    """A problem with one input file or folder; ``str()`` is a single line naming it."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = one_line(reason)
        super().__init__(f"{self.path}: {self.reason}")

    def __reduce__(self) -> tuple:
        return (DataError, (self.path, self.reason))


class ParamError(Exception):
    """A parameter that is missing, of the wrong type, out of range or not one of the choices."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(one_line(f"{key}: {message}", limit=400))


@dataclass(frozen=True, order=True)
class Problem:
    """One skipped input: a path relative to the dataset root and the reason."""

    file: str
    reason: str


@dataclass
class Problems:
    """Skipped inputs, recorded in the order found, with paths relative to ``root``."""

    root: Path | None = None
    items: list[Problem] = field(default_factory=list)

    def add(self, path: Path | str, reason: str) -> None:
        """Record a problem with ``path``."""
        err = DataError(self._rel(path), reason)
        self.items.append(Problem(err.path, err.reason))

    def add_error(self, err: DataError) -> None:
        """Record a :class:`DataError` raised by a reader."""
        self.add(err.path, err.reason)

    def _rel(self, path: Path | str) -> str:
        p = Path(path)
        if self.root is not None:
            try:
                return p.relative_to(self.root).as_posix()
            except ValueError:
                pass
        return p.as_posix()
