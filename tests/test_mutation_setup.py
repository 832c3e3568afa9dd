"""The mutation run's own set-up (tests/MUTATION.md): what makes its kill rates honest."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT


def test_under_mutmuts_coverage_pass_the_oracle_fixture_is_made_for_every_test():
    """mutmut credits code a fixture runs to the test that set it up: a module fixture would let
    only the first of the oracle tests run against the mutants they all check."""
    env = {**os.environ, "MUTANT_UNDER_TEST": "stats"}
    env.pop("MGMT_UNDER_MUTATION", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--setup-only", "tests/test_oracles.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    setups = [line.split() for line in proc.stdout.splitlines() if line.strip().startswith("SETUP")]
    scopes = {words[1] for words in setups if words[2] == "fixture"}
    assert proc.returncode == 0 and scopes == {"F"}, proc.stdout[-2000:]
