"""The offline report: self-contained (no network), with the metrics, charts and captioned montages."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

from tests.conftest import run_stage


@pytest.fixture(scope="module")
def reported(trained_run):
    folder, env, _ = trained_run
    for name in ("evaluate", "report"):
        proc = run_stage(name, env)
        assert proc.returncode == 0, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, f"{name} logs one summary line: {proc.stderr}"
    return folder


def test_the_report_needs_no_network(reported):
    html = (reported / "reports/html/index.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "no external resources"
    assert "<script" not in html
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) >= 5 + 4  # charts and montages
    assert all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)


def test_the_report_shows_the_metrics_that_matter(reported):
    html = (reported / "reports/html/index.html").read_text()
    metrics = json.loads((reported / "eval/metrics.json").read_text())
    assert f"{metrics['patient_auc']:.3f}" in html and f"{metrics['bayes_auc']:.3f}" in html
    for words in (
        "patient AUC",
        "95% interval",
        "fold AUC",
        "Bayes-optimal AUC",
        "Confusion",
        "repeat0_fold2",
        "Montages",
    ):
        assert words in html, words


def test_montages_are_written_per_series(reported):
    for series in ("FLAIR", "T1w", "T1wCE", "T2w"):
        png = (reported / f"reports/html/montage_{series}.png").read_bytes()
        assert png[:4] == b"\x89PNG" and len(png) > 5000


def test_a_patients_montage_level_is_its_most_flair_bright_slice():
    from stages.report import montage_level

    flair = np.full((5, 8, 8), 60, np.uint8)
    flair[:, :2] = 0  # background
    flair[3, 4:, 4:] = 130  # oedema on the slice at 12 mm: above twice the foreground median (60)
    t1 = np.full((2, 8, 8), 60, np.uint8)
    t1[0, 0, 0] = 255  # brighter on another series: not what sets the level
    z = np.array([0.0, 4.0, 8.0, 12.0, 16.0], np.float32)
    arrays = {"FLAIR": flair, "FLAIR_z": z, "T1w": t1, "T1w_z": np.array([0.0, 16.0], np.float32)}
    assert montage_level(arrays, series=("FLAIR", "T1w")) == 12.0
    assert montage_level(arrays, series=("T1w", "FLAIR")) == 12.0  # FLAIR first, whatever the order
    flair[3, 4:, 4:] = 115  # nothing twice the foreground median: the middle slice
    assert montage_level(arrays, series=("FLAIR", "T1w")) == 8.0
    assert montage_level(arrays, series=("T1w",)) == 0.0  # without FLAIR, the first series present
    empty = {"FLAIR": flair[:0], "FLAIR_z": z[:0]}
    assert montage_level(empty, series=("FLAIR",)) is None
