"""The parameter schema: every rule, and one line on stderr naming the key for every bad value."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stages.errors import ParamError
from stages.models import MODELS
from stages.params import ModelParams, Params, load_params, load_paths
from tests.conftest import ROOT, run_stage, write_config

# (section, key, bad value, words the message must contain)
BAD = [
    ("preprocess", "img_size", 0, "greater than or equal to 8"),
    ("preprocess", "img_size", -5, "greater than or equal to 8"),
    ("preprocess", "img_size", "abc", "valid integer"),
    ("preprocess", "img_size", 32.5, "valid integer"),
    ("preprocess", "middle_fraction", 1.5, "less than or equal to 1"),
    ("preprocess", "middle_fraction", 0, "greater than 0"),
    ("preprocess", "slice_step", 0, "greater than or equal to 1"),
    ("preprocess", "orientation", "oblique", "'axial', 'coronal', 'sagittal' or 'native'"),
    ("preprocess", "normalisation", "zscore", "'percentile' or 'reference'"),
    ("preprocess", "clip_percentiles", [99.5, 0.5], "0 <= low < high <= 100"),
    ("preprocess", "clip_percentiles", [0.5], "at least 2 items"),
    ("preprocess", "series", ["FLAIR", "XYZ"], "'FLAIR', 'T1w', 'T1wCE' or 'T2w'"),
    ("preprocess", "series", ["FLAIR", "FLAIR"], "twice"),
    ("preprocess", "exclude", ["abc"], "pattern"),
    ("preprocess", "strict", "yes", "valid boolean"),
    ("preprocess", "workers", -1, "greater than or equal to 0"),
    ("preprocess", "reader", "turbo", "'fast' or 'plain'"),
    ("model", "name", "unknown", "'seed_cnn', 'mil_cnn', 'cnn25d', 'cnn3d' or 'resnet3d'"),
    ("model", "series", ["FLAIR", "XYZ"], "'FLAIR', 'T1w', 'T1wCE' or 'T2w'"),
    ("model", "series", [], "at least 1 item"),
    ("model", "depth", 0, "greater than or equal to 1"),
    ("train", "epochs", 0, "greater than or equal to 1"),
    ("train", "learning_rate", 0, "greater than 0"),
    ("train", "early_stopping", "sometimes", "'off', 'val_loss' or 'patient_auc'"),
    ("train", "distribute", "sometimes", "'auto', 'off' or 'mirrored'"),
    ("train", "val_fraction", 0.9, "less than or equal to 0.5"),
    ("cv", "folds", 1, "greater than or equal to 2"),
    ("cv", "repeats", 0, "greater than or equal to 1"),
    ("cv", "pooling", "best", "'raw', 'rank' or 'calibrated'"),
    ("demo", "prevalence", 1.0, "less than 1"),
    ("report", "montage_patients", 0, "greater than or equal to 1"),
]


def params_with(tmp_path: Path, section: str, key: str, value: object) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params[section][key] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_the_repository_params_and_paths_are_valid():
    params, paths = load_params(ROOT / "params.yaml"), load_paths(ROOT / "paths.yaml")
    assert params.preprocess.img_size >= 8 and paths.cache_dir


@pytest.mark.parametrize(("section", "key", "value", "words"), BAD)
def test_each_rule_names_the_key_the_value_and_what_is_allowed(tmp_path, section, key, value, words):
    with pytest.raises(ParamError) as info:
        load_params(params_with(tmp_path, section, key, value))
    message = str(info.value)
    assert f"{section}.{key}" in message and words in message and "\n" not in message
    assert repr(value)[:20] in message or isinstance(value, list)


def test_unknown_and_missing_keys_are_named(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["epocs"] = 3
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ParamError, match=r"train\.epocs: unknown key"):
        load_params(tmp_path / "p.yaml")
    del params["train"]["epocs"], params["cv"]["folds"]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ParamError, match=r"cv\.folds: missing"):
        load_params(tmp_path / "p.yaml")


def test_cross_field_rules(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["preprocess"]["series"] = ["FLAIR"]
    params["model"]["series"] = ["T1wCE"]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ParamError, match=r"model\.series \['T1wCE'\] must be among preprocess\.series"):
        load_params(tmp_path / "p.yaml")
    with pytest.raises(ParamError, match=r"train\.min_epochs \(50\) exceeds train\.epochs"):
        path = params_with(tmp_path, "train", "min_epochs", 50)
        data = yaml.safe_load(path.read_text())
        data["train"]["epochs"] = 10
        path.write_text(yaml.safe_dump(data))
        load_params(path)
    with pytest.raises(ParamError, match=r"demo\.min_image_size \(64\) exceeds demo\.image_size \(48\)"):
        load_params(params_with(tmp_path, "demo", "min_image_size", 64))
    assert load_params(params_with(tmp_path, "demo", "min_image_size", 48)).demo.min_image_size == 48


def test_unreadable_files_are_one_line_errors(tmp_path):
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ParamError, match="not valid YAML"):
        load_params(tmp_path / "bad.yaml")
    with pytest.raises(ParamError, match="cannot read"):
        load_params(tmp_path / "missing.yaml")


def test_the_schema_accepts_exactly_the_registered_models():
    assert set(MODELS) == set(ModelParams.model_fields["name"].annotation.__args__)


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("preprocess", "img_size", 0),
        ("preprocess", "img_size", -5),
        ("preprocess", "img_size", "abc"),
        ("preprocess", "middle_fraction", 1.5),
        ("preprocess", "slice_step", 0),
        ("preprocess", "orientation", "oblique"),
        ("model", "name", "unknown"),
        ("model", "series", ["FLAIR", "XYZ"]),
        ("cv", "folds", 1),
        ("train", "epochs", 0),
    ],
)
def test_a_stage_with_a_bad_value_exits_with_one_line_naming_the_key(tmp_path, section, key, value):
    env = write_config(tmp_path, **{section: {key: value}})
    before = sorted(p for p in tmp_path.rglob("*"))
    proc = run_stage("preprocess", env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("preprocess: ") and f"{section}.{key}" in lines[0], proc.stderr
    assert sorted(p for p in tmp_path.rglob("*")) == before, "nothing may be written"


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "presets").glob("*.yaml")))
def test_every_preset_is_valid_against_the_schema(name):
    from stages.preset import merged, preset_values

    values = preset_values(name)
    params = Params.model_validate(merged(yaml.safe_load((ROOT / "params.yaml").read_text()), values))
    for section, keys in values.items():
        for key, value in keys.items():
            got = getattr(getattr(params, section), key)
            assert (list(got) if isinstance(got, tuple) else got) == value, f"{section}.{key}"


def test_the_seed_preset_is_the_seed_notebooks_configuration():
    from stages.preset import preset_values

    seed = preset_values("seed")
    assert seed["model"] == {"name": "seed_cnn", "series": ["T1wCE"]}
    assert seed["preprocess"]["img_size"] == 32 and seed["preprocess"]["clip_percentiles"] == [0.5, 99.5]
    assert seed["preprocess"]["middle_fraction"] == 0.5 and seed["preprocess"]["slice_step"] == 3
    assert seed["train"]["epochs"] == 40 and seed["train"]["batch_size"] == 32 and seed["train"]["patience"] == 3
