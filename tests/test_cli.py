"""Command lines: ``--help`` does nothing else, errors are one line, TensorFlow's noise is filtered."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from stages.cli import NOISE, _pump
from stages.fingerprint import STAGES
from tests.conftest import ROOT, preprocess_stage, run_stage, write_config

ALL_STAGES = ("fingerprint", *STAGES)


def snapshot(folder) -> dict:
    return {p: p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("name", ALL_STAGES)
def test_help_exits_zero_and_touches_nothing(tmp_path, name):
    env = write_config(tmp_path / "run")
    (tmp_path / "run" / "data").mkdir()
    before = snapshot(tmp_path)
    proc = run_stage(name, env, "--help", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python -m stages."), proc.stderr
    assert "--params" in proc.stdout and proc.stderr == ""
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", ALL_STAGES)
def test_stage_modules_do_not_import_heavy_libraries_on_import(name):
    """So that ``--help`` and input errors answer in about a second."""
    heavy = ("tensorflow", "keras", "sklearn", "matplotlib")
    code = f"import sys, stages.{name}; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_evaluate_does_not_load_pydicom():
    code = "import stages.evaluate, sys; assert 'pydicom' not in sys.modules and 'cv2' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_importing_stages_changes_no_pydicom_setting():
    code = (
        "import pydicom; before = pydicom.config.settings.reading_validation_mode; "
        "import stages.preprocess, stages.dicom, stages.dicom_fast, stages.volume; "
        "assert pydicom.config.settings.reading_validation_mode == before"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_missing_inputs_are_one_line_errors(tmp_path):
    env = write_config(tmp_path, raw_dir=tmp_path / "nowhere")
    proc = preprocess_stage(env)
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0
    assert "nowhere" in proc.stderr and "does not exist" in proc.stderr
    proc = run_stage("train", env)
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0 and "dvc repro preprocess" in proc.stderr


NOISY = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    b"I0000 00:00:1795824770.124319    2409 port.cc:153] oneDNN custom operations are on. You may see...\n"
    b"I0000 00:00:1795824770.124319    2409 cpu_feature_guard.cc:210] This TensorFlow binary is optimized\n"
    b"To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the "
    b"appropriate compiler flags.\n"
    b"E0000 00:00:1795824780.126009    2409 util.cc:131] oneDNN supports DT_BOOL only on platforms with AVX-512.\n"
)
KEPT = b"train: repeat0_fold0: 74 fit\nE0000 00:00:1.2 3 x.cc:1] a real error\nTraceback (most recent call last):\n"


def pumped(chunks: list[bytes]) -> bytes:
    read_in, write_in = os.pipe()
    read_out, write_out = os.pipe()
    thread = threading.Thread(target=_pump, args=(read_in, write_out))
    thread.start()
    for chunk in chunks:
        os.write(write_in, chunk)
    os.close(write_in)
    thread.join()
    os.close(write_out)
    data = b""
    while chunk := os.read(read_out, 65536):
        data += chunk
    os.close(read_out)
    return data


def test_the_filter_drops_tensorflow_notices_and_keeps_everything_else():
    assert all(NOISE.match(line + b"\n") for line in NOISY.splitlines())
    assert pumped([NOISY + KEPT]) == KEPT
    # a progress bar rewrites one line without a newline: it must pass at once, in pieces too
    assert pumped([b"\rtrain 40%", b"\rtrain 60%", b"|bar\n", b"I0000 00:00:1.0 1 a.cc:1] x\n"]) == (
        b"\rtrain 40%\rtrain 60%|bar\n"
    )
