"""Stage ``fingerprint``: one fingerprint per stage of the code it runs, blind to comments and formatting.

DVC reruns a stage whenever a file it depends on changes by a byte. Every other stage depends on
its fingerprint, ``data/fingerprints/<stage>.txt``, instead of on source files: the digest of the syntax
tree, without docstrings, of each ``stages`` module the stage imports (directly or through other
modules, lazy imports included). An edited comment reruns only this stage (a fraction of a
second), and its unchanged fingerprints stop DVC there; a behavioural edit reruns exactly the
stages that import the module.
"""

from __future__ import annotations

import ast
import hashlib
import logging
from pathlib import Path

log = logging.getLogger("fingerprint")
PACKAGE = "stages"
PACKAGE_DIR = Path(__file__).resolve().parent
STAGES = ("demo", "inventory", "preprocess", "train", "evaluate", "predict", "report")


def strip_docstrings(tree: ast.AST) -> ast.AST:
    """Remove the docstring of the module and of every class and function in ``tree`` (in place)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            first = body[0] if body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return tree


def source_digest(source: str) -> str:
    """Digest of Python source that ignores comments, docstrings and formatting."""
    tree = strip_docstrings(ast.parse(source))
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()


def imported_modules(source: str) -> set[str]:
    """Names of the ``stages`` modules that ``source`` imports anywhere (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith(f"{PACKAGE}.")}
        elif isinstance(node, ast.ImportFrom) and node.module == PACKAGE:
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(f"{PACKAGE}."):
            found.add(node.module.split(".")[1])
    return found


def module_closure(module: str, package_dir: Path = PACKAGE_DIR) -> list[str]:
    """``module`` and every ``stages`` module it imports, transitively, sorted."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += sorted(imported_modules((package_dir / f"{name}.py").read_text()) - seen)
    return sorted(seen)


def fingerprint(stage: str, package_dir: Path = PACKAGE_DIR) -> str:
    """The fingerprint file of a stage: one ``module digest`` line per module it runs."""
    modules = module_closure(stage, package_dir)
    return "".join(f"{m} {source_digest((package_dir / f'{m}.py').read_text())}\n" for m in modules)


def main() -> None:
    """Write ``data/fingerprints/<stage>.txt`` for every stage."""
    from stages.cli import stage
    from stages.io import write_text

    with stage("fingerprint", __doc__) as ctx:
        out = Path(ctx.paths.fingerprints)
        for name in STAGES:
            write_text(out / f"{name}.txt", fingerprint(name))
    log.info("fingerprints of %d stages in %s", len(STAGES), out)


if __name__ == "__main__":
    main()
