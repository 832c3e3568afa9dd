"""What code and which libraries shape an output: digests of behaviour, import closures, versions.

A module's digest covers its syntax tree without docstrings and without log calls
(``log.info(...)`` and the like as statements), so comments, formatting, docstrings and log text
change nothing. A module's closure is itself and every ``stages`` module it imports, directly or
lazily, transitively, with the package's ``__init__`` (it runs first); :data:`PLUMBING` modules
(the command line, its logging, the parameter schema, the process pools, where tasks run) are neither hashed
nor followed. The libraries of a closure
are the pinned requirements (``requirements.txt``) its third-party imports load, transitively,
with their installed versions and Python's ``major.minor``.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import re
import sys
from functools import cache
from pathlib import Path

PACKAGE = "stages"
PACKAGE_DIR = Path(__file__).resolve().parent
REQUIREMENTS = PACKAGE_DIR.parent / "requirements.txt"
# Modules that shape no output: the command line, its logging and stderr filter (``cli``), the
# parameter schema (``params``: it accepts or refuses values, and dvc.yaml declares per stage each
# key the stage reads, so a changed value reruns the stage through DVC, not through this digest)
# and the process pools (``pools``: how work is spread over cores; tested equal to serial runs).
PLUMBING = frozenset({"cli", "executors", "params", "pools"})
LOG_METHODS = frozenset({"debug", "info", "warning", "error", "exception", "critical"})
# Libraries loaded without an import statement: pydicom's decoders are plug-ins it finds itself.
PLUGINS = {"pydicom": ("pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle", "pyjpegls")}


def _is_log_call(node: ast.AST) -> bool:
    """``log.info(...)`` or ``logger.warning(...)`` as a statement of its own."""
    if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)):
        return False
    func = node.value.func
    return (
        isinstance(func, ast.Attribute)
        and func.attr in LOG_METHODS
        and isinstance(func.value, ast.Name)
        and func.value.id in ("log", "logger")
    )


def _is_docstring(node: ast.AST) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def behaviour_tree(tree: ast.AST) -> ast.AST:
    """``tree`` without docstrings and log-call statements (in place)."""
    for node in ast.walk(tree):
        for name in ("body", "orelse", "finalbody"):
            body = getattr(node, name, None)
            if not isinstance(body, list) or not body or not isinstance(body[0], ast.AST):
                continue
            documented = isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            start = 1 if name == "body" and documented and _is_docstring(body[0]) else 0
            kept = [s for s in body[start:] if not _is_log_call(s)]
            if len(kept) != len(body):
                setattr(node, name, kept or [ast.Pass()])
    return tree


def source_digest(source: str) -> str:
    """Digest of Python source that ignores comments, docstrings, formatting and log calls."""
    tree = behaviour_tree(ast.parse(source))
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()


def _imports(source: str) -> tuple[set[str], set[str]]:
    """(``stages`` modules, other top-level packages) that ``source`` imports anywhere."""
    ours, theirs = set(), set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top, _, rest = alias.name.partition(".")
                if top == PACKAGE:
                    ours.add(rest.split(".")[0])
                else:
                    theirs.add(top)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top, _, rest = node.module.partition(".")
            if top == PACKAGE:
                ours |= {rest.split(".")[0]} if rest else {a.name for a in node.names}
            else:
                theirs.add(top)
    return ours, theirs - set(sys.stdlib_module_names) - {"__future__"}


def imported_modules(source: str) -> set[str]:
    """Names of the ``stages`` modules that ``source`` imports anywhere (functions included)."""
    return _imports(source)[0]


def third_party_imports(source: str) -> set[str]:
    """Top-level names of the non-standard, non-``stages`` packages ``source`` imports anywhere."""
    return _imports(source)[1]


def _read(module: str, package_dir: Path) -> str:
    return (package_dir / f"{module}.py").read_text()


def module_closure(module: str, package_dir: Path = PACKAGE_DIR) -> list[str]:
    """``module``, the package's ``__init__`` imports and every ``stages`` module they import,
    transitively, less :data:`PLUMBING`; sorted."""
    seen: set[str] = set()
    todo = [module, *sorted(imported_modules((package_dir / "__init__.py").read_text()))]
    while todo:
        name = todo.pop()
        if name in seen or name in PLUMBING:
            continue
        seen.add(name)
        todo += sorted(imported_modules(_read(name, package_dir)) - seen)
    return sorted(seen)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_requirements(path: Path = REQUIREMENTS) -> set[str]:
    """Normalised names of the distributions ``requirements.txt`` pins (``-r`` includes followed)."""
    names: set[str] = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r"):
            names |= pinned_requirements(path.parent / line[2:].strip())
        elif line:
            names.add(_normal(re.split(r"[\s\[=<>!~;]", line)[0]))
    return names


@cache
def _distributions_of_packages() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _requirements_of(dist: str) -> set[str]:
    """Names of what ``dist`` requires (no extras)."""
    from packaging.requirements import Requirement

    found = set()
    for text in importlib.metadata.requires(dist) or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            found.add(_normal(req.name))
    return found


def library_versions(packages: set[str], *, pinned: set[str] | None = None) -> dict[str, str]:
    """Installed versions of the pinned distributions that import names ``packages`` load,
    transitively, and Python's ``major.minor``."""
    if pinned is None:  # outside a checkout (no requirements.txt) every library counts
        pinned = pinned_requirements() if REQUIREMENTS.exists() else None
    todo = [_normal(d) for p in sorted(packages) for d in _distributions_of_packages().get(p, [])]
    seen: set[str] = set()
    while todo:
        dist = todo.pop()
        if dist in seen:
            continue
        seen.add(dist)
        try:
            todo += sorted(_requirements_of(dist) | {_normal(p) for p in PLUGINS.get(dist, ())})
        except importlib.metadata.PackageNotFoundError:
            continue
    versions = {"python": ".".join(map(str, sys.version_info[:2]))}
    for dist in sorted(seen if pinned is None else seen & pinned):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def code_digests(modules: list[str] | tuple[str, ...], package_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    """:func:`source_digest` of each ``stages`` module in ``modules``."""
    return {name: source_digest(_read(name, package_dir)) for name in modules}


def libraries_of(modules: list[str] | tuple[str, ...], package_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    """:func:`library_versions` of everything ``modules`` import."""
    packages = set().union(*(third_party_imports(_read(m, package_dir)) for m in modules))
    return library_versions(packages)
