"""Stage ``inventory``: a content digest per patient folder of the dataset, cheap to keep current.

DVC would track the raw dataset file by file (about 35 us per file on every ``dvc status``, some
14 s for the challenge's 400k files); instead this always-run stage writes one small table,
``data/inventory.tsv`` (one line per patient folder or top-level file: files, bytes, a 128-bit
XXH3 digest of the relative paths and contents), which ``preprocess`` depends on. Digests are
kept in a SQLite state file keyed by path, inode, size and mtime, so a run re-reads only what
changed; a folder whose files all stat as before is not even looked up file by file. The table
holds relative paths and digests only, and is the same on every machine for the same content.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sqlite3
import stat
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING

import xxhash

from stages.errors import DataError
from stages.io import write_text

if TYPE_CHECKING:
    from stages.params import Params, Paths

log = logging.getLogger("inventory")
SPLITS = ("train", "test")  # folders whose sub-folders are patients
CHUNK = 1 << 20
HEADER = "entry\tfiles\tbytes\txxh3_128\n"


@dataclass(frozen=True)
class Item:
    """One inventory line: a patient folder (``train/00012``) or a top-level file or folder."""

    name: str
    files: int
    bytes: int
    digest: str


def file_digest(path: str, size: int) -> str:
    """128-bit XXH3 of a file's content (streamed in 1 MB blocks when large)."""
    h = xxhash.xxh3_128()
    with open(path, "rb", buffering=0) as fh:
        if size <= CHUNK:
            h.update(fh.read())
        else:
            while block := fh.read(CHUNK):
                h.update(block)
    return h.hexdigest()


def _walk(top: str, rel: str) -> list[tuple[str, int, int, int]]:
    """``(relative path, inode, size, mtime_ns)`` of every regular file under ``top``, sorted."""
    out = []
    with os.scandir(top) as it:
        entries = sorted(it, key=attrgetter("name"))
    for e in entries:
        try:
            st = e.stat(follow_symlinks=True)
        except OSError:  # a dangling link: preprocess reports what it cannot read
            continue
        name = f"{rel}/{e.name}"
        if stat.S_ISDIR(st.st_mode):
            out.extend(_walk(e.path, name))
        elif stat.S_ISREG(st.st_mode):
            out.append((name, st.st_ino, st.st_size, st.st_mtime_ns))
    return out


def entries(root: Path) -> dict[str, str]:
    """The inventory's entries: ``train/<id>`` and ``test/<id>`` (files or folders), else each
    top-level file or folder; name -> path."""
    out: dict[str, str] = {}
    with os.scandir(root) as it:
        top = sorted(it, key=attrgetter("name"))
    for e in top:
        if e.is_dir() and e.name in SPLITS:
            with os.scandir(e.path) as it:
                out.update((f"{e.name}/{sub.name}", sub.path) for sub in it)
        else:
            out[e.name] = e.path
    return dict(sorted(out.items()))


def _stat_entry(job: tuple[str, str, str | None]) -> tuple[str, str, list[tuple[str, int, int, int]] | None]:
    """``(name, fingerprint, files)`` of an entry; ``files`` only when the fingerprint is not the known one."""
    name, path, known = job
    if os.path.isdir(path):
        files = _walk(path, name)
    else:
        try:
            st = os.stat(path)
        except OSError:
            st = None
        files = [(name, st.st_ino, st.st_size, st.st_mtime_ns)] if st is not None and stat.S_ISREG(st.st_mode) else []
    fingerprint = _fingerprint(files)
    return name, fingerprint, None if fingerprint == known else files


def _fingerprint(files: Iterable[tuple[str, int, int, int]]) -> str:
    return xxhash.xxh3_128_hexdigest("\n".join(f"{p}\0{i}\0{s}\0{m}" for p, i, s, m in files).encode())


class State:
    """Digests known from earlier scans, in SQLite (atomic commits: a killed scan loses nothing)."""

    def __init__(self, path: Path, root: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path)
        self.db.executescript(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);"
            "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, ino INT, size INT, mtime INT, digest TEXT);"
            "CREATE TABLE IF NOT EXISTS items (name TEXT PRIMARY KEY, fingerprint TEXT, files INT, bytes INT,"
            " digest TEXT);"
        )
        known = self.db.execute("SELECT value FROM meta WHERE key = 'root'").fetchone()
        if known is None or known[0] != str(root.resolve()):  # another dataset: start afresh
            with self.db:
                self.db.execute("DELETE FROM files")
                self.db.execute("DELETE FROM items")
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('root', ?)", (str(root.resolve()),))
        self.items = {r[0]: (r[1], Item(r[0], r[2], r[3], r[4])) for r in self.db.execute("SELECT * FROM items")}

    def file_digests(self, name: str) -> dict[str, tuple[int, int, int, str]]:
        """Known ``path -> (inode, size, mtime, digest)`` of the files of entry ``name``."""
        rows = self.db.execute("SELECT * FROM files WHERE path >= ? AND path < ?", (f"{name}/", f"{name}0"))
        rows = list(rows) + list(self.db.execute("SELECT * FROM files WHERE path = ?", (name,)))
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}

    def save(self, name: str, fingerprint: str, item: Item, files: list[tuple[str, int, int, int, str]]) -> None:
        with self.db:
            self.db.execute(
                "DELETE FROM files WHERE (path >= ? AND path < ?) OR path = ?", (f"{name}/", f"{name}0", name)
            )
            self.db.executemany("INSERT INTO files VALUES (?, ?, ?, ?, ?)", files)
            self.db.execute("INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?, ?)", (name, fingerprint, *_fields(item)))

    def close(self) -> None:
        self.db.close()

    def forget(self, names: Iterable[str]) -> None:
        with self.db:
            for name in names:
                self.db.execute("DELETE FROM items WHERE name = ?", (name,))
                self.db.execute(
                    "DELETE FROM files WHERE (path >= ? AND path < ?) OR path = ?", (f"{name}/", f"{name}0", name)
                )


def _fields(item: Item) -> tuple[int, int, str]:
    return item.files, item.bytes, item.digest


def scan(root: Path, *, state_db: Path, workers: int = 1) -> dict[str, Item]:
    """The inventory of ``root``: files re-read only where path, inode, size or mtime changed.

    With ``workers`` > 1 the entries are listed and stat-ed by that many forked processes (for the
    ``inventory`` stage's own process only: forking one that runs threads, such as TensorFlow's,
    can deadlock the child).
    """
    if not root.is_dir():
        raise DataError(root, "dataset root does not exist (data.raw_dir)")
    found = entries(root)
    with closing(State(state_db, root)) as state:
        jobs = [(name, path, state.items[name][0] if name in state.items else None) for name, path in found.items()]
        pool = mp.get_context("fork").Pool(workers) if workers > 1 else None
        try:
            stated = pool.imap(_stat_entry, jobs, chunksize=16) if pool is not None else map(_stat_entry, jobs)
            items = {}
            for name, fingerprint, files in stated:
                items[name] = state.items[name][1] if files is None else _update(state, root, name, fingerprint, files)
        finally:
            if pool is not None:
                pool.terminate()
        state.forget(set(state.items) - set(found))
    return items


def _update(state: State, root: Path, name: str, fingerprint: str, files: list[tuple[str, int, int, int]]) -> Item:
    """Digest a changed entry: its files re-read where their inode, size or mtime changed."""
    digests = state.file_digests(name)
    rows = []
    for path, ino, size, mtime in files:
        old = digests.get(path)
        digest = old[3] if old is not None and old[:3] == (ino, size, mtime) else file_digest(str(root / path), size)
        rows.append((path, ino, size, mtime, digest))
    content = xxhash.xxh3_128_hexdigest("".join(f"{r[0]}\0{r[4]}\n" for r in rows).encode())
    item = Item(name, len(rows), sum(r[2] for r in rows), content)
    state.save(name, fingerprint, item, rows)
    return item


def table(items: dict[str, Item]) -> str:
    """The inventory as TSV text, sorted by entry."""
    return HEADER + "".join(f"{i.name}\t{i.files}\t{i.bytes}\t{i.digest}\n" for _, i in sorted(items.items()))


def read_table(path: Path | str) -> dict[str, Item]:
    """The items of an inventory written by :func:`table`; a one-line DataError when there is none."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        raise DataError(path, "no inventory here (run `dvc repro inventory` first)") from None
    if not lines or lines[0] + "\n" != HEADER:
        raise DataError(path, "not an inventory table (run `dvc repro inventory` again)")
    items = {}
    for line in lines[1:]:
        name, files, size, digest = line.split("\t")
        items[name] = Item(name, int(files), int(size), digest)
    return items


def execute(params: Params, paths: Paths) -> dict[str, Item]:
    """Scan ``data.raw_dir`` (every core) and write its table to ``paths.inventory``."""
    from stages.pools import worker_count

    items = scan(Path(params.data.raw_dir), state_db=Path(paths.state_db), workers=worker_count(0))
    write_text(paths.inventory, table(items))
    return items


def main() -> None:
    """Write ``data/inventory.tsv`` for ``data.raw_dir``."""
    from stages.cli import stage

    with stage("inventory", __doc__) as ctx:
        items = execute(ctx.params, ctx.paths)
        log.info("%d entries, %d files", len(items), sum(i.files for i in items.values()))


if __name__ == "__main__":
    main()
