"""The cache key covers every module that shapes an entry, and nothing but their behaviour."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stages.cache import EntryMeta, read_entry_meta, read_settings
from stages.cachekey import CODE_MODULES, CacheConfig, code_digest, write_config
from stages.codehash import module_closure, source_digest
from stages.errors import DataError, Problem
from stages.io import save_npz
from tests.conftest import ROOT, make_settings

NOT_SHAPING = {"cohort", "inventory"}  # list files
COMMENT_EDIT = '\n\n# a comment\n\n\ndef _added_later():\n    """A docstring."""\n'
BEHAVIOUR_EDIT = "\n\nSOMETHING_NEW = 1\n"


def test_code_modules_are_exactly_what_preprocess_runs_that_shapes_entries():
    assert set(CODE_MODULES) == set(module_closure("preprocess")) - NOT_SHAPING


def test_source_digest_ignores_comments_docstrings_and_formatting():
    a = 'def f(x):\n    """Doc."""\n    return x + 1  # add\n'
    b = "# header\n\ndef f( x ):\n    '''Another doc.'''\n\n    return (x\n            + 1)\n"
    assert source_digest(a) == source_digest(b)
    assert source_digest(a) != source_digest(a.replace("x + 1", "x + 2"))
    assert source_digest(a) != source_digest(a.replace("return x + 1", "return 1 + x"))


def copy_package(tmp_path: Path) -> Path:
    pkg = tmp_path / "stages"
    shutil.copytree(ROOT / "stages", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "requirements.txt", tmp_path / "requirements.txt")  # the pins, as in a checkout
    return pkg


@pytest.mark.parametrize("module", CODE_MODULES)
def test_each_module_counts_by_behaviour_only(tmp_path, module):
    pkg = copy_package(tmp_path)
    before = code_digest(package_dir=pkg)
    source = (pkg / f"{module}.py").read_text()
    (pkg / f"{module}.py").write_text(
        source.replace('"""', '"""Reworded. ', 1) + COMMENT_EDIT.replace("_added_later", "_x") + "    pass\n"
    )
    assert code_digest(package_dir=pkg) != before  # a new function is behaviour
    (pkg / f"{module}.py").write_text(source + "\n# only a comment\n")
    assert code_digest(package_dir=pkg) == before
    (pkg / f"{module}.py").write_text(source + BEHAVIOUR_EDIT)
    assert code_digest(package_dir=pkg) != before


def preprocess_in(pkg_root: Path, env: dict) -> str:
    """The inventory and preprocess stages of the package copy in ``pkg_root``; preprocess's log."""
    for name in ("inventory", "preprocess"):
        proc = subprocess.run(
            [sys.executable, "-m", f"stages.{name}"],
            cwd=pkg_root,
            env={**env, "PYTHONPATH": str(pkg_root)},
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr
    return proc.stderr


def converted(log: str) -> int:
    return int(log.split("converted ")[1].split(" ")[0])


@pytest.mark.slow
def test_edits_reconvert_exactly_when_behaviour_changes(tmp_path, clean_cohort):
    from tests.conftest import write_config as config

    pkg = copy_package(tmp_path / "code")
    env = config(tmp_path / "run", raw_dir=clean_cohort, preprocess={"img_size": 16, "workers": 1})
    everyone = converted(preprocess_in(pkg.parent, env))
    assert everyone == 12  # 9 training patients (3 faulty excluded) and 3 test patients
    for module in ("volume", "dicom_fast", "preprocess", "io"):
        path = pkg / f"{module}.py"
        source = path.read_text()
        path.write_text(source.replace('"""', '"""Reworded docstring. ', 1) + "\n# a comment\n")
        assert converted(preprocess_in(pkg.parent, env)) == 0, f"a comment in {module}.py reconverted"
        path.write_text(source + BEHAVIOUR_EDIT)
        assert converted(preprocess_in(pkg.parent, env)) == everyone, (
            f"a behavioural edit of {module}.py reconverted nothing"
        )
        path.write_text(source)
        preprocess_in(pkg.parent, env)
    edits = {  # what shapes no entry: log text, the list of stages the fingerprint stage knows
        "preprocess": ("converted %d (%d files)", "built %d entries from %d files"),
        "fingerprint": ('"report")', '"report", "probe")'),
    }
    for module, (old, new) in edits.items():
        path = pkg / f"{module}.py"
        source = path.read_text()
        assert old in source
        path.write_text(source.replace(old, new))
        assert converted(preprocess_in(pkg.parent, env).replace("built", "converted")) == 0, module
        path.write_text(source)


def test_the_config_is_published_and_read_back(tmp_path):
    settings = make_settings(img_size=24)
    config = CacheConfig(settings)
    write_config(tmp_path, config)
    assert read_settings(tmp_path) == settings
    assert CacheConfig(make_settings(img_size=32)).digest != config.digest
    assert CacheConfig(settings).digest == config.digest
    with pytest.raises(DataError) as raised:
        read_settings(tmp_path / "nowhere")
    assert (
        str(raised.value)
        == f"{tmp_path / 'nowhere' / 'config.json'}: no preprocessed cache here (run `dvc repro preprocess` first)"
    )


def test_entries_carry_their_meta(tmp_path):
    meta = EntryMeta("k", {"T1wCE": 3}, (Problem("train/1/x.dcm", "not a DICOM file"),))
    save_npz(tmp_path / "e.npz", {}, meta.to_dict())
    assert read_entry_meta(tmp_path / "e.npz") == meta
    save_npz(tmp_path / "old.npz", {})  # an entry in the format before keys: rebuilt
    assert read_entry_meta(tmp_path / "old.npz") is None


SETTING_CHANGES = {
    "series": ("T1wCE",),
    "orientation": "native",
    "middle_fraction": 0.75,
    "slice_step": 2,
    "img_size": 24,
    "normalisation.method": "reference",
    "normalisation.clip_percentiles": (1.0, 99.0),
    "normalisation.ceiling": 2.5,
    "blank_level": 0.2,
    "blank_min_fraction": 0.05,
    "window": "largest_area",
}


def leaves(obj: object, prefix: str = "") -> list[str]:
    from dataclasses import fields, is_dataclass

    out = []
    for f in fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        out += leaves(value, f"{prefix}{f.name}.") if is_dataclass(value) else [f"{prefix}{f.name}"]
    return out


def test_every_setting_changes_the_cache_key():
    """Every field of the settings (the normalisation's too) is in the digest every entry's key holds."""
    from dataclasses import replace

    base = make_settings()
    assert sorted(leaves(base)) == sorted(SETTING_CHANGES), "a new setting needs a change here"
    for key, value in SETTING_CHANGES.items():
        name, _, sub = key.partition(".")
        changed = replace(base, **{name: replace(getattr(base, name), **{sub: value}) if sub else value})
        assert changed != base and CacheConfig(changed).digest != CacheConfig(base).digest, key


def test_the_cache_config_names_settings_code_and_versions_with_the_numerics_switch(monkeypatch):
    from stages.cachekey import library_versions
    from stages.codehash import libraries_of
    from stages.numerics import SWITCH

    monkeypatch.delenv(SWITCH, raising=False)
    assert library_versions() == {**libraries_of(CODE_MODULES), "numerics": "portable"}
    portable = CacheConfig(settings=make_settings())
    monkeypatch.setenv(SWITCH, "native")
    assert library_versions()["numerics"] == "native"
    native = CacheConfig(settings=make_settings())
    assert native.digest != portable.digest  # native kernels may round otherwise: other entries
    assert portable.to_dict() == {
        "settings": make_settings().to_dict(),
        "code": code_digest(),
        "versions": {**libraries_of(CODE_MODULES), "numerics": "portable"},
    }
