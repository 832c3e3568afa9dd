"""Named sets of parameter values (``presets/<name>.yaml``) as ``dvc exp run`` arguments.

    dvc exp run -n seed $(python -m stages.preset seed)     # the seed notebook's configuration
    dvc exp run -n large $(python -m stages.preset large)   # a 600-patient demo cohort
    python -m stages.preset seed large                       # several presets: later ones win

Every preset is checked against the parameter schema (merged into ``params.yaml``) before its
``-S section.key=value`` arguments are printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from stages.errors import ParamError
from stages.params import Params, params_file

PRESETS_DIR = Path(__file__).resolve().parents[1] / "presets"


def preset_values(name: str) -> dict[str, dict]:
    """The sections and values of ``presets/<name>.yaml``."""
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.exists():
        available = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
        raise ParamError(name, f"no such preset (available: {available})")
    return yaml.safe_load(path.read_text()) or {}


def merged(base: dict, *presets: dict[str, dict]) -> dict:
    """``base`` params with the presets' values, later presets winning."""
    out = json.loads(json.dumps(base))
    for preset in presets:
        for section, values in preset.items():
            out.setdefault(section, {}).update(values)
    return out


def validated(base: dict, *presets: dict[str, dict]) -> dict:
    """``base`` params with the presets merged in, checked against the schema (pydantic's
    ValueError for a bad key or value)."""
    params = merged(base, *presets)
    Params.model_validate(params)
    return params


def _flow(value: object) -> str:
    """A value as compact YAML without spaces, so ``$(...)`` passes it to dvc as one word."""
    if isinstance(value, list):
        return "[" + ",".join(_flow(v) for v in value) + "]"
    text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    if " " in text:
        raise ParamError(text, "preset values must not contain spaces")
    return text


def set_arguments(*presets: dict[str, dict]) -> list[str]:
    """``-S section.key=value`` arguments."""
    return [
        arg
        for section, values in merged({}, *presets).items()
        for key, value in values.items()
        for arg in ("-S", f"{section}.{key}={_flow(value)}")
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m stages.preset", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="+", help="preset names (files in presets/)")
    args = parser.parse_args(argv)
    try:
        presets = [preset_values(n) for n in args.names]
        validated(yaml.safe_load(params_file().read_text()), *presets)
    except ParamError as err:
        sys.exit(f"preset: {err}")
    except ValueError as err:  # pydantic's ValidationError: the preset names a bad key or value
        sys.exit(f"preset: {' '.join(args.names)}: {' '.join(str(err).split())[:300]}")
    print(" ".join(set_arguments(*presets)))


if __name__ == "__main__":
    main()
