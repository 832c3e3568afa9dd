"""File IO: atomic outputs (an interrupted run never leaves a half-written file), byte-stable
archives (identical content gives identical bytes), and fast reads of inputs."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the zip format's earliest date, for every member
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: outputs get the usual permissions, not mkstemp's owner-only 0600
META_MEMBER = "meta.json"


def read_whole(path: Path | str) -> bytes:
    """A file's whole content through one descriptor and ``os.pread``.

    Plain ``os`` calls: Python's buffered file objects cost a quarter of the time of reading a
    small file.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        return _pread_all(fd, os.fstat(fd).st_size, 0)
    finally:
        os.close(fd)


def read_range(path: Path | str, offset: int, length: int) -> bytes:
    """Up to ``length`` bytes of a file from ``offset`` (fewer at its end), with ``os.pread``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return _pread_all(fd, length, offset)
    finally:
        os.close(fd)


def _pread_all(fd: int, length: int, offset: int) -> bytes:
    data = os.pread(fd, length, offset)
    while 0 < len(data) < length:  # a short read is allowed, if rare for regular files
        chunk = os.pread(fd, length - len(data), offset + len(data))
        if not chunk:
            break
        data += chunk
    return data


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_partial_files(folder: Path) -> int:
    """Delete temporary files that an atomic write killed mid-way left in ``folder`` (recursively)."""
    if not folder.is_dir():
        return 0
    stale = [p for p in folder.rglob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def json_text(obj: Any, *, indent: int | None = 2) -> str:
    """Stable, sorted JSON (no NaN), with a final newline."""
    return json.dumps(obj, indent=indent, sort_keys=True, allow_nan=False) + "\n"


def write_json(path: Path | str, obj: Any, *, indent: int | None = 2) -> None:
    """Write ``obj`` as stable, sorted JSON, atomically."""
    atomic_write_bytes(path, json_text(obj, indent=indent).encode())


def read_json(path: Path | str) -> Any:
    """Read a JSON file."""
    with open(path) as fh:
        return json.load(fh)


def write_text(path: Path | str, text: str) -> None:
    """Write UTF-8 text atomically."""
    atomic_write_bytes(path, text.encode())


def write_csv(path: Path | str, rows: Iterable[Mapping[str, Any]], fieldnames: list[str]) -> None:
    """Write dict rows as CSV with a header, atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fieldnames, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def _zip_bytes(members: Iterable[tuple[str, bytes]]) -> bytes:
    """An uncompressed zip of ``(name, bytes)`` members with fixed timestamps."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members:
            zf.writestr(zipfile.ZipInfo(name, date_time=ZIP_EPOCH), data)
    return buf.getvalue()


def npz_bytes(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None) -> bytes:
    """An uncompressed ``.npz`` that ``np.load`` reads, with an optional JSON ``meta.json`` member.

    ``np.savez`` stamps each member with the current time, so identical arrays would give
    different bytes (and DVC hashes); fixed member timestamps keep the file reproducible.
    """
    members = []
    for key in sorted(arrays):
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.ascontiguousarray(arrays[key]), allow_pickle=False)
        members.append((f"{key}.npy", buf.getvalue()))
    if meta is not None:
        members.append((META_MEMBER, json_text(meta).encode()))
    return _zip_bytes(members)


def save_npz(path: Path | str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None) -> None:
    """Write :func:`npz_bytes` atomically: the arrays and their meta appear together or not at all."""
    atomic_write_bytes(path, npz_bytes(arrays, meta))


def read_npz_meta(path: Path | str) -> dict[str, Any] | None:
    """The ``meta.json`` member of an ``.npz`` written by :func:`save_npz`; None if absent or unreadable."""
    try:
        with zipfile.ZipFile(path) as zf:
            return json.loads(zf.read(META_MEMBER))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def _renumber_shared_objects(config: str) -> str:
    """``shared_object_id`` values (memory addresses) renumbered 1, 2, ... in order of appearance."""
    ids: dict[str, str] = {}

    def number(match: re.Match) -> str:
        return f'"shared_object_id": {ids.setdefault(match.group(1), str(len(ids) + 1))}'

    return re.sub(r'"shared_object_id": (\d+)', number, config)


def stable_keras_bytes(data: bytes) -> bytes:
    """A ``.keras`` archive with what Keras stamps per save made constant.

    Keras writes the save date into ``metadata.json``, the current time into zip member
    headers, and memory addresses as ``shared_object_id`` in ``config.json``; the ids are
    renumbered in order of appearance (sharing is kept), the date and times fixed.
    """
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = [(info.filename, zf.read(info)) for info in zf.infolist()]
    out = []
    for name, content in members:
        if name == "metadata.json":
            meta = json.loads(content)
            meta["date_saved"] = "1980-01-01@00:00:00"
            content = json.dumps(meta).encode()
        elif name == "config.json":
            content = _renumber_shared_objects(content.decode()).encode()
        out.append((name, content))
    return _zip_bytes(out)
