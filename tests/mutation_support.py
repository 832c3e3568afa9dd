"""What makes a mutmut run affordable (``scripts/mutation.py``); nothing here acts outside one.

A mutant is killed by the first failing test, so two things decide a run's length: which tests run
first, and what their fixtures cost (a session fixture may build a cohort and train models).

* **Cheapest test modules first.** mutmut's coverage pass (``MGMT_UNDER_MUTATION=stats``) records
  what each fixture's set-up and each test's call cost; in a mutant's run the selected tests are
  put in order of their module's cost (a module's tests stay together, in their own order, so its
  module fixtures are set up once).
* **A fixture is built once when the mutant cannot change it.** :func:`built_once` reuses a copy
  of a folder built without any mutant when the fixture runs only stages that do not run the
  mutated module (``stages.codehash.module_closure``, the rule that decides DVC's reruns): for a
  ``predict`` mutant the trained models are the clean run's, for a ``train`` mutant they are not.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from stages.codehash import module_closure

ROOT = Path(__file__).resolve().parents[1]  # the mutants/ folder in a mutmut run
COSTS = ROOT / ".mutation-costs.json"
FIXTURES = ROOT / ".mutation-fixtures"
MUTANT = re.compile(r"^stages\.(?P<module>\w+)\.")


def phase() -> str | None:
    """``"mutant"`` in a mutant's run, ``"clean"`` in mutmut's clean and forced-fail runs,
    ``"stats"`` in its coverage pass (where ``tests/conftest.py`` hides ``MUTANT_UNDER_TEST``),
    None outside mutmut."""
    if "MUTANT_UNDER_TEST" in os.environ:
        return "mutant" if mutated_module() else "clean"
    return "stats" if os.environ.get("MGMT_UNDER_MUTATION") == "stats" else None


def mutated_module() -> str | None:
    """The ``stages`` module whose mutant this run checks (``stages.<module>.x_...``), else None."""
    match = MUTANT.match(os.environ.get("MUTANT_UNDER_TEST", ""))
    return match["module"] if match else None


def built_once(
    name: str, *, stages: tuple[str, ...], folder: Path, build: Callable[[Path], dict], version: str
) -> dict:
    """``build(folder)`` (which returns JSON values), or under mutmut, when none of ``stages`` runs
    the mutated module, a copy of the same build made without a mutant (its ``*.yaml`` files, which
    name the folder, rewritten). ``version`` keys the copy (the fixture's code)."""
    module = mutated_module()
    unchanged = module is None or all(module not in module_closure(s) for s in stages)
    entry = FIXTURES / f"{name}-{hashlib.sha256(version.encode()).hexdigest()[:12]}"
    if phase() is None or not unchanged:
        return build(folder)
    if (entry / "meta.json").exists():
        meta = json.loads((entry / "meta.json").read_text())
        shutil.copytree(entry / "tree", folder, dirs_exist_ok=True)
        for path in folder.rglob("*.yaml"):
            path.write_text(path.read_text().replace(meta["origin"], str(folder)))
        return meta["values"]
    values = build(folder)
    staging = FIXTURES / f".{entry.name}-{os.getpid()}"
    shutil.copytree(folder, staging / "tree")
    (staging / "meta.json").write_text(json.dumps({"origin": str(folder), "values": values}))
    try:
        staging.rename(entry)  # the first worker to finish publishes it
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return values


class CostRecorder:
    """In the coverage pass: seconds of each fixture's set-up and each test's call, then each test
    module's cost (its tests' calls and every fixture they use, once) into :data:`COSTS`."""

    def __init__(self) -> None:
        self.fixtures: dict[str, float] = {}
        self.calls: dict[str, float] = {}
        self.uses: dict[str, set[str]] = {}

    @pytest.hookimpl(hookwrapper=True)
    def pytest_fixture_setup(self, fixturedef):
        start = time.perf_counter()
        yield
        name = fixturedef.argname
        self.fixtures[name] = max(self.fixtures.get(name, 0.0), time.perf_counter() - start)

    def pytest_runtest_logreport(self, report) -> None:
        if report.when == "call":
            module = report.nodeid.split("::")[0]
            self.calls[module] = self.calls.get(module, 0.0) + report.duration

    def pytest_collection_modifyitems(self, items) -> None:
        for item in items:
            self.uses.setdefault(item.nodeid.split("::")[0], set()).update(item.fixturenames)

    def pytest_sessionfinish(self) -> None:
        costs = {
            module: self.calls.get(module, 0.0) + sum(self.fixtures.get(f, 0.0) for f in fixtures)
            for module, fixtures in self.uses.items()
        }
        COSTS.write_text(json.dumps(costs, indent=1, sort_keys=True))


def order_by_cost(items: list[pytest.Item]) -> None:
    """Put ``items`` in order of their module's recorded cost, a module's items together and in
    their own order (unrecorded modules last)."""
    costs = json.loads(COSTS.read_text()) if COSTS.exists() else {}
    rank = {}
    for index, item in enumerate(items):
        module = item.nodeid.split("::")[0]
        rank.setdefault(module, (costs.get(module, float("inf")), module))
        item.stash[_ORDER] = index
    items.sort(key=lambda item: (rank[item.nodeid.split("::")[0]], item.stash[_ORDER]))


_ORDER = pytest.StashKey[int]()
