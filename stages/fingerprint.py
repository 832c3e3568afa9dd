"""Stage ``fingerprint``: per stage, the code and library versions that shape its outputs.

DVC reruns a stage whenever a file it depends on changes by a byte. Every other stage depends on
its fingerprint, ``data/fingerprints/<stage>.txt``, instead of on source files: one line per
``stages`` module the stage runs (its behaviour digest: comments, docstrings, formatting and log
text do not count; the command-line plumbing of ``cli.py`` is left out) and one per pinned library
it loads (installed version), see ``stages/codehash.py``. An edited comment, or a library no stage
of ours loads, reruns only this stage (a fraction of a second); a behavioural edit or an upgrade
reruns exactly the stages that run the module or load the library, and the summary line names it.

This stage runs first on every ``dvc repro`` (the environment is not a file DVC can watch) and
validates all of ``params.yaml``: a bad value given with ``dvc exp run -S`` stops here, before DVC
has removed any other stage's outputs (this stage's own are persistent, written in place).
"""

from __future__ import annotations

import logging
from pathlib import Path

from stages.codehash import PACKAGE_DIR, code_digests, libraries_of, module_closure

log = logging.getLogger("fingerprint")
STAGES = ("demo", "inventory", "preprocess", "train", "evaluate", "predict", "report")


def fingerprint(stage: str, package_dir: Path = PACKAGE_DIR) -> str:
    """The fingerprint file of a stage: ``module <name> <digest>`` and ``library <name> <version>`` lines."""
    modules = module_closure(stage, package_dir)
    code = [f"module {m} {d}\n" for m, d in code_digests(modules, package_dir).items()]
    libs = [f"library {n} {v}\n" for n, v in libraries_of(modules, package_dir).items()]
    return "".join(code + libs)


def changes(old: str, new: str) -> list[str]:
    """Names of the modules and libraries whose line differs between two fingerprints."""
    a, b = set(old.splitlines()), set(new.splitlines())
    return sorted({line.split()[1] for line in a ^ b if len(line.split()) == 3})


def main() -> None:
    """Write ``data/fingerprints/<stage>.txt`` for every stage; name what changed."""
    from stages.cli import stage
    from stages.io import write_text

    with stage("fingerprint", __doc__) as ctx:
        out = Path(ctx.paths.fingerprints)
        changed = {}
        for name in STAGES:
            path, text = out / f"{name}.txt", fingerprint(name)
            old = path.read_text() if path.exists() else None
            if old != text:
                write_text(path, text)
                changed[name] = changes(old, text) if old is not None else ["new"]
        for stray in sorted(set(out.glob("*.txt")) - {out / f"{s}.txt" for s in STAGES}):
            stray.unlink()
    if changed:
        what = "; ".join(
            f"{s} ({', '.join(c[:4])}{f' +{len(c) - 4} more' if len(c) > 4 else ''})" for s, c in changed.items()
        )
        log.info("%d of %d stages have new code or libraries: %s", len(changed), len(STAGES), what)
    else:
        log.info("code and libraries of all %d stages unchanged", len(STAGES))


if __name__ == "__main__":
    main()
