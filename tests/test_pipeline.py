"""The real ``dvc`` on a temporary clone with a tiny cohort: repro, caching, experiments, sweeps,
plots, the submission, single-patient inference and a shared remote."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "demo": {"n_train": 40, "n_test": 12, "image_size": 32, "slices": 8},
    "preprocess": {"img_size": 16, "slice_step": 1},
    "train": {"epochs": 3},
    "cv": {"folds": 3},
}
ENV = {
    **os.environ,
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
    "DVC_NO_ANALYTICS": "1",
}
pytestmark = pytest.mark.slow


def sh(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def stages_run(proc: subprocess.CompletedProcess) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", proc.stdout + proc.stderr))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git+DVC clone of the project's tracked files with tiny parameters, reproduced once."""
    path = tmp_path_factory.mktemp("clone") / "repo"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for rel in tracked.split():
        if (ROOT / rel).is_file():
            (path / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, path / rel)
    params = yaml.safe_load((path / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (path / "dvc.lock").unlink(missing_ok=True)
    sh("git", "init", "-q", "-b", "main", cwd=path)
    sh("git", "add", "-A", cwd=path)
    sh("git", "commit", "-qm", "tiny", cwd=path)
    first = sh("dvc", "repro", cwd=path)
    assert stages_run(first) == {"demo", "preprocess", "train", "evaluate", "predict"}
    sh("git", "add", "dvc.lock", cwd=path)
    sh("git", "commit", "-qm", "reproduced", cwd=path)
    return path


def test_repro_gives_patient_level_metrics(repo):
    shown = sh("dvc", "metrics", "show", "--json", cwd=repo).stdout
    assert '"roc_auc"' in shown
    m = json.loads((repo / "dvclive/evaluate/metrics.json").read_text())
    for key in (
        "roc_auc",
        "roc_auc_fold_mean",
        "roc_auc_fold_std",
        "roc_auc_fold_0",
        "roc_auc_fold_2",
        "bayes_auc",
        "n_patients",
    ):
        assert key in m, key
    assert 0 <= m["roc_auc"] <= 1 and m["n_patients"] == 37


def test_second_repro_runs_nothing(repo):
    proc = sh("dvc", "repro", cwd=repo)
    assert stages_run(proc) == set()
    assert "up to date" in sh("dvc", "status", cwd=repo).stdout


def test_submission_matches_sample_by_id(repo):
    sub = pd.read_csv(repo / "submission.csv", dtype={"BraTS21ID": str})
    sample = pd.read_csv(repo / "data/demo/sample_submission.csv", dtype={"BraTS21ID": str})
    assert sorted(sub["BraTS21ID"]) == sorted(sample["BraTS21ID"]) and sub["BraTS21ID"].is_unique
    assert sub["MGMT_value"].between(0, 1).all() and sub["MGMT_value"].nunique() == len(sub)


def test_plots_have_their_fields(repo):
    roc = json.loads((repo / "dvclive/evaluate/plots/sklearn/roc.json").read_text())
    assert {"fpr", "tpr"} <= set(roc["roc"][0])
    cm = json.loads((repo / "dvclive/evaluate/plots/sklearn/confusion_matrix.json").read_text())
    assert {"actual", "predicted"} <= set(cm[0])
    curve = (repo / "dvclive/train/fold_0/plots/metrics/eval/patient_auc.tsv").read_text().splitlines()
    assert curve[0].split("\t") == ["step", "patient_auc"] and len(curve) >= 2
    assert (repo / "reports/montage/T1wCE.png").read_bytes()[:4] == b"\x89PNG"
    out = repo / "plots_html"
    sh("dvc", "plots", "show", "-o", str(out), cwd=repo)
    html = (out / "index.html").read_text()
    for needle in (
        "ROC (out-of-fold",
        "Confusion matrix",
        "Training curves",
        "eval/patient_auc.tsv",
        "montage_T1wCE.png",
    ):
        assert needle in html, needle


def test_single_patient_cli(repo):
    patient = next(p for p in sorted((repo / "data/demo/test").iterdir()))
    proc = sh(sys.executable, "-m", "stages.predict", "--patient", str(patient), cwd=repo)
    assert 0.0 <= float(proc.stdout.strip().splitlines()[-1]) <= 1.0
    broken = repo / "broken"
    (broken / "T1wCE").mkdir(parents=True)
    (broken / "T1wCE" / "Image-1.dcm").write_bytes(b"not a dicom file")
    proc = sh(sys.executable, "-m", "stages.predict", "--patient", str(broken), cwd=repo, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("predict: ") and "broken" in proc.stderr
    proc = sh(sys.executable, "-m", "stages.predict", "--patient", str(repo / "nowhere"), cwd=repo, check=False)
    assert proc.returncode == 1 and "not a patient folder" in proc.stderr


def test_param_changes_rerun_only_what_depends_on_them(repo):
    proc = sh("dvc", "exp", "run", "-S", "train.epochs=2", cwd=repo)
    assert stages_run(proc) == {"train", "evaluate", "predict"}
    proc = sh("dvc", "exp", "run", "-S", "preprocess.img_size=24", cwd=repo)
    assert stages_run(proc) == {"preprocess", "train", "evaluate", "predict"}
    sh("git", "checkout", "--", "params.yaml", "dvc.lock", cwd=repo)
    sh("dvc", "checkout", "-q", cwd=repo)


def test_queued_sweep_runs_and_is_listed(repo):
    for epochs in (1, 2):
        sh("dvc", "exp", "run", "--queue", "-S", f"train.epochs={epochs}", "-S", "train.seed=7", cwd=repo)
    sh("dvc", "queue", "start", cwd=repo)
    deadline = time.time() + 600
    while time.time() < deadline:
        status = sh("dvc", "queue", "status", cwd=repo).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    assert "Failed" not in status, status
    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=repo).stdout)
    flat = json.dumps(shown)
    found = {int(e) for e in re.findall(r'"epochs": (\d)', flat)}
    assert {1, 2} <= found
    assert flat.count('"roc_auc"') >= 3


def test_remote_push_and_pull_into_a_fresh_clone(repo, tmp_path):
    remote = tmp_path / "remote"
    sh("dvc", "remote", "add", "-d", "team", str(remote), cwd=repo)
    sh("dvc", "push", "--run-cache", cwd=repo)
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    sh("dvc", "remote", "add", "-d", "team", str(remote), cwd=clone)
    sh("dvc", "pull", cwd=clone)
    assert "up to date" in sh("dvc", "status", cwd=clone).stdout
    assert stages_run(sh("dvc", "repro", cwd=clone)) == set()


def test_predict_stage_matches_a_shuffled_sample_and_covers_empty_patients(repo, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(repo / "data/demo", raw, copy_function=shutil.copyfile)  # the workspace copy is read-only
    sample = pd.read_csv(raw / "sample_submission.csv", dtype=str).sample(frac=1, random_state=3)
    sample = pd.concat([sample, pd.DataFrame({"BraTS21ID": ["00999"], "MGMT_value": ["0.5"]})])
    (raw / "sample_submission.csv").write_text(sample.to_csv(index=False))
    (raw / "test" / "00999" / "T1wCE").mkdir(parents=True)  # a test patient with no usable slices
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["raw_dir"] = str(raw)
    params["paths"] = {k: str(tmp_path / "out" / v) for k, v in params["paths"].items()}
    params["paths"]["models_dir"] = str(repo / "models")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**ENV, "MGMT_PARAMS": str(tmp_path / "params.yaml")}
    for stage in ("preprocess", "predict"):
        subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=repo, env=env, check=True, capture_output=True)
    sub = pd.read_csv(params["paths"]["submission"], dtype={"BraTS21ID": str})
    assert sorted(sub["BraTS21ID"]) == sorted(sample["BraTS21ID"]) and sub["BraTS21ID"].is_unique
    card = json.loads((repo / "models/model_card.json").read_text())
    assert sub.set_index("BraTS21ID").loc["00999", "MGMT_value"] == pytest.approx(card["train_prevalence"])
    report = json.loads(Path(params["paths"]["predict_report"]).read_text())
    assert report["patients_without_slices"] == ["00999"]
    original = pd.read_csv(repo / "submission.csv", dtype={"BraTS21ID": str}).set_index("BraTS21ID")["MGMT_value"]
    again = sub.set_index("BraTS21ID")["MGMT_value"].drop("00999")
    pd.testing.assert_series_equal(again.sort_index(), original.sort_index(), check_exact=False, rtol=1e-6)
