"""The real ``dvc`` on a temporary clone with a small cohort: what reruns when something changes (and
what does not), experiments, sweeps, plots, and a shared remote."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from stages.evaluate import HEADLINE

ROOT = Path(__file__).resolve().parents[1]
SMALL = {
    "demo": {"n_train": 40, "n_test": 12, "image_size": 32, "slices": 8},
    "preprocess": {"img_size": 16, "slice_step": 1},
    "model": {"depth": 4, "width": 4},
    "train": {"epochs": 2},
    "cv": {"folds": 3},
    "report": {"montage_patients": 4},
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
ALL = {"fingerprint", "demo", "inventory", "preprocess", "train", "evaluate", "predict", "report"}
ALWAYS = {"fingerprint", "inventory"}  # always_changed: cheap checks DVC runs every time
ALWAYS_STATUS = {name: ["always changed"] for name in ALWAYS}
pytestmark = pytest.mark.slow


def sh(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def stages_run(proc: subprocess.CompletedProcess) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", proc.stdout + proc.stderr)) - ALWAYS


def commit(repo: Path, message: str) -> None:
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", message, cwd=repo)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git+DVC clone of the project's files with small parameters, reproduced once and committed."""
    path = tmp_path_factory.mktemp("clone") / "repo"
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for rel in listed.split():
        if (ROOT / rel).is_file() and not rel.startswith(".venv"):
            (path / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, path / rel)
    params = yaml.safe_load((path / "params.yaml").read_text())
    for section, values in SMALL.items():
        params[section].update(values)
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (path / "dvc.lock").unlink(missing_ok=True)
    sh("git", "init", "-q", "-b", "main", cwd=path)
    commit(path, "small")
    first = sh("dvc", "repro", cwd=path)
    assert stages_run(first) == ALL - ALWAYS
    (path.parent / "first_repro.log").write_text(first.stdout + first.stderr)
    commit(path, "reproduced")
    return path


def test_repro_gives_patient_level_metrics_and_a_clean_tree(repo):
    m = json.loads((repo / "eval/metrics.json").read_text())
    assert sorted(m) == sorted(HEADLINE)
    details = json.loads((repo / "eval/details.json").read_text())
    for key in ("patient_auc_rank", "patient_auc_raw", "fold_auc_sd", "folds/repeat0_fold0", "confusion_threshold"):
        assert key in details, key
    assert {k: details[k] for k in m} == m
    assert 0 <= m["patient_auc"] <= 1 and m["n_patients"] == 37
    assert sh("git", "status", "--porcelain", cwd=repo).stdout == ""


def test_each_stage_prints_one_summary_line_and_no_warning(repo):
    """What a user reads from ``dvc repro``: DVC's own lines and one ``<stage>: ...`` line per stage
    (``train`` adds one per fold)."""
    dvc = re.compile(r"^$|^\s|^Running stage |^> python -m stages\.|^(Generating|Updating) lock|^To |^Use `dvc")
    printed = (repo.parent / "first_repro.log").read_text().splitlines()
    ours = [line.split(": ")[0] for line in printed if not dvc.match(line)]
    assert sorted(ours) == sorted([*ALL, *["train"] * SMALL["cv"]["folds"]]), printed
    assert not [line for line in printed if "warning" in line.lower()]


def test_a_second_repro_runs_only_the_always_run_checks(repo):
    proc = sh("dvc", "repro", cwd=repo)
    assert "Running stage 'inventory'" in proc.stdout and stages_run(proc) == set()
    assert json.loads(sh("dvc", "status", "--json", cwd=repo).stdout) == ALWAYS_STATUS
    assert sh("git", "status", "--porcelain", cwd=repo).stdout == ""


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("preprocess.workers=1", set()),
        ("preprocess.reader=plain", set()),
        ("report.montage_patients=2", {"report"}),
        ("cv.pooling=calibrated", {"evaluate", "predict", "report"}),
        ("train.epochs=1", {"train", "evaluate", "predict", "report"}),
        ("preprocess.strict=true", {"preprocess"}),
        ("preprocess.img_size=20", {"preprocess", "train", "evaluate", "predict", "report"}),
    ],
)
def test_a_parameter_reruns_exactly_the_stages_whose_outputs_it_shapes(repo, change, expected):
    # strict fails on the demo's broken files, but only preprocess was run to find out
    proc = sh("dvc", "exp", "run", "-S", change, cwd=repo, check=change != "preprocess.strict=true")
    assert stages_run(proc) == expected, proc.stdout[-2000:]
    sh("git", "checkout", "--", ".", cwd=repo)  # params, lock and the git-tracked outputs
    sh("dvc", "checkout", "-q", "--force", cwd=repo)


def edit(repo: Path, module: str, text: str) -> str:
    path = repo / "stages" / f"{module}.py"
    original = path.read_text()
    path.write_text(original + text)
    return original


def test_a_comment_reruns_nothing_and_a_behavioural_edit_reruns_the_stages_importing_it(repo):
    original = edit(repo, "cohort", "\n# a comment only\n")
    proc = sh("dvc", "repro", cwd=repo)
    assert stages_run(proc) == set()
    (repo / "stages/cohort.py").write_text(original)
    original = edit(repo, "scoring", "\nSOMETHING_NEW = 1\n")
    proc = sh("dvc", "repro", cwd=repo)
    assert stages_run(proc) == {"train", "evaluate", "predict", "report"}
    assert "fingerprint: 4 of 7 stages have new code or libraries: train (scoring)" in proc.stderr
    (repo / "stages/scoring.py").write_text(original)
    sh("git", "checkout", "--", ".", cwd=repo)
    sh("dvc", "checkout", "-q", "--force", cwd=repo)
    assert stages_run(sh("dvc", "repro", cwd=repo)) == set()  # the committed state again


def test_changing_or_adding_one_raw_file_reruns_preprocess(repo, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(repo / "data/demo", raw, copy_function=shutil.copyfile)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["raw_dir"] = str(raw)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = sh("dvc", "repro", "report", cwd=repo)
    assert "preprocess" in stages_run(proc) and "converted 0 " in proc.stderr, "same content: nothing to convert"
    victim = sorted((raw / "test").iterdir())[0] / "FLAIR"
    first = sorted(victim.iterdir())[0]
    data = first.read_bytes()
    first.write_bytes(data[:-2] + bytes([data[-2] ^ 1, data[-1]]))
    proc = sh("dvc", "repro", "report", cwd=repo)
    assert "preprocess" in stages_run(proc) and "converted 1 " in proc.stderr
    shutil.copy(first, victim / "Image-999.dcm")
    proc = sh("dvc", "repro", "report", cwd=repo)
    assert "preprocess" in stages_run(proc) and "converted 1 " in proc.stderr
    assert "preprocess" not in stages_run(sh("dvc", "repro", "report", cwd=repo))
    sh("git", "checkout", "--", ".", cwd=repo)  # params, lock and the git-tracked outputs
    sh("dvc", "checkout", "-q", "--force", cwd=repo)


def test_plots_show_without_warnings(repo, tmp_path):
    out = tmp_path / "plots"
    proc = sh("dvc", "plots", "show", "-o", str(out), cwd=repo)
    assert "WARNING" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    html = (out / "index.html").read_text()
    for needle in (
        "Loss per epoch",
        "Validation patient AUC per epoch",
        "ROC of out-of-fold patient scores",
        "Precision-recall",
        "Confusion matrix",
    ):
        assert needle in html, needle


def test_plots_show_renders_offline_with_the_scripts_from_the_package_index(repo, tmp_path):
    sh(sys.executable, "scripts/offline_plots.py", cwd=repo)  # pip download, once
    out = tmp_path / "offline"
    sh("dvc", "plots", "show", "-o", str(out), cwd=repo)
    html = (out / "index.html").read_text()
    assert not re.search(r"<script[^>]+src=", html), "no script is loaded from anywhere"
    assert 'version="6.1.2"' in html and "vegaEmbed" in html, "Vega and Vega-Embed are inline"
    assert html.count("vegaEmbed('#") == 5  # every chart
    assert sh("git", "status", "--porcelain", cwd=repo).stdout == "", "the template and its setting stay out of git"
    (repo / ".dvc/config.local").unlink()


def test_exp_show_keeps_paths_apart_and_the_documented_columns_fit(repo):
    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=repo).stdout)
    params = shown[0]["data"]["params"]
    assert "paths" not in params["params.yaml"]["data"] and "cache_dir" in json.dumps(params["paths.yaml"])
    assert '"patient_auc"' in json.dumps(shown)
    readme = (repo / "README.md").read_text()
    drop = readme.split("--drop '")[1].split("'")[0]
    csv = sh("dvc", "exp", "show", "--csv", "--drop", drop, cwd=repo).stdout.splitlines()[0].split(",")
    assert "patient_auc" in csv and "model.name" in csv
    assert not [c for c in csv if "/" in c or c.startswith("paths.") or c in ("models", "predictions", "training")]


def test_queued_sweep_runs_and_is_listed(repo):
    sh("dvc", "exp", "remove", "--all-commits", cwd=repo)  # the experiments of earlier tests
    for epochs in (1, 3):
        sh("dvc", "exp", "run", "--queue", "-S", f"train.epochs={epochs}", "-S", "train.seed=7", cwd=repo)
    sh("dvc", "queue", "start", cwd=repo)
    deadline = time.time() + 600
    while time.time() < deadline:
        status = sh("dvc", "queue", "status", cwd=repo).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    assert "Failed" not in status, status
    flat = json.dumps(json.loads(sh("dvc", "exp", "show", "--json", cwd=repo).stdout))
    assert {1, 3} <= {int(e) for e in re.findall(r'"epochs": (\d)', flat)}
    assert flat.count('"patient_auc"') >= 3


def test_the_readme_exp_show_recipe_fits_120_columns_with_the_changes_visible(repo):
    """After the queued sweep above (train.epochs and train.seed changed)."""
    import shlex

    line = next(x for x in (repo / "README.md").read_text().splitlines() if x.startswith("dvc exp show --only"))
    proc = subprocess.run(
        [*shlex.split(line), "--no-pager"], cwd=repo, env={**ENV, "COLUMNS": "120"}, capture_output=True, text=True
    )
    table = proc.stdout.splitlines()
    assert proc.returncode == 0 and len(table) >= 5, proc.stderr
    assert max(len(x.rstrip()) for x in table) <= 120
    assert "…" not in proc.stdout, "no column is cut"
    assert "patient_auc" in table[1] and "train.epochs" in table[1] and "train.seed" in table[1]


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A local S3 server (moto's, from requirements-cluster.txt) on a free port of 127.0.0.1, with a
    bucket ``team``; stopped at the end. Credentials come from the environment (dummies here)."""
    from tests.s3 import moto_server

    with moto_server(tmp_path_factory.mktemp("s3"), bucket="team") as endpoint:
        yield endpoint


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def add_remote(clone: Path, kind: str, where: str, *local: str) -> None:
    """The team remote, as the README sets it up: the URL may be in git, the endpoint and keys are not."""
    if kind == "s3":
        sh("dvc", "remote", "add", *local, "-d", "team", "s3://team/dvc", cwd=clone)
        sh("dvc", "remote", "modify", "--local", "team", "endpointurl", where, cwd=clone)
    else:
        sh("dvc", "remote", "add", *local, "-d", "team", where, cwd=clone)


@pytest.mark.parametrize("kind", ["folder", "s3"])
def test_remote_push_and_pull_into_a_fresh_clone(repo, tmp_path, kind, request, monkeypatch):
    if kind == "s3":
        from tests.s3 import need_cluster_requirements

        need_cluster_requirements()
        for key, value in S3_ENV.items():
            monkeypatch.setitem(ENV, key, value)
    where = request.getfixturevalue("s3_endpoint") if kind == "s3" else str(tmp_path / "remote")
    add_remote(repo, kind, where, "--local")  # not in the tracked config
    try:
        sh("dvc", "push", "--run-cache", cwd=repo)
        clone = tmp_path / "clone"
        sh("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path)
        add_remote(clone, kind, where)
        sh("dvc", "pull", cwd=clone)
        assert json.loads(sh("dvc", "status", "--json", cwd=clone).stdout) == ALWAYS_STATUS
        assert stages_run(sh("dvc", "repro", cwd=clone)) == set()
        assert sh("git", "status", "--porcelain", cwd=clone).stdout.strip() in ("", "M .dvc/config")
    finally:
        sh("dvc", "remote", "remove", "--local", "team", cwd=repo)


def outputs_digest(repo: Path) -> dict[str, str]:
    """Every file of every DVC output of the workspace, by content."""
    tracked = [
        "data/fingerprints",
        "data/demo",
        "data/inventory.tsv",
        "data/cache",
        "data/patients.csv",
        "reports",
        "models",
        "predictions",
        "training",
        "eval",
        "submission.csv",
    ]
    found = {}
    for name in tracked:
        root = repo / name
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        found |= {p.relative_to(repo).as_posix(): p.read_bytes().hex()[-64:] + str(p.stat().st_size) for p in files}
    return found


def test_a_rejected_experiment_removes_nothing_and_one_checkout_restores_the_state(repo):
    before = outputs_digest(repo)
    proc = sh("dvc", "exp", "run", "-S", "train.epochs=0", cwd=repo, check=False)
    assert proc.returncode != 0
    ours = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("fingerprint: ")]
    assert len(ours) == 1 and "train.epochs" in ours[0] and "0" in ours[0], proc.stderr[-2000:]
    assert stages_run(proc) == set(), "refused before any other stage ran"
    assert outputs_digest(repo) == before
    (repo / "params.yaml").touch()  # the README's way back: DVC left git's index believing the file unchanged
    sh("git", "checkout", "HEAD", "--", "params.yaml", cwd=repo)
    assert json.loads(sh("dvc", "status", "--json", cwd=repo).stdout) == ALWAYS_STATUS
    assert sh("git", "status", "--porcelain", cwd=repo).stdout == ""


def test_a_fresh_clone_shows_its_results_before_anything_runs(repo, tmp_path):
    clone = tmp_path / "fresh"
    sh("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    committed = json.loads((repo / "eval/metrics.json").read_text())
    shown = json.loads(sh("dvc", "metrics", "show", "--json", cwd=clone).stdout)
    assert json.dumps(committed["patient_auc"]) in json.dumps(shown)
    diff = sh("dvc", "metrics", "diff", cwd=clone)  # HEAD against the workspace: both the committed file
    assert "ERROR" not in diff.stdout + diff.stderr and "!" not in diff.stdout
    table = json.loads(sh("dvc", "exp", "show", "--json", cwd=clone).stdout)
    main_row = next(e for e in table if e.get("name") == "main")
    assert json.dumps(committed["patient_auc"]) in json.dumps(main_row)
    out = tmp_path / "plots"
    sh("dvc", "plots", "show", "-o", str(out), cwd=clone)
    html = (out / "index.html").read_text()
    assert "ROC of out-of-fold patient scores" in html and '"fpr"' in html, "the plot data is in the clone"
