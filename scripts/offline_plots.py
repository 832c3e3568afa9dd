"""Make ``dvc plots show`` render offline: its chart library from PyPI, once, instead of a CDN each view.

    python scripts/offline_plots.py            # once per clone, after installing the requirements

DVC's plot page loads Vega, Vega-Lite and Vega-Embed from a CDN, so offline it shows no chart.
This script downloads the panel wheel (pinned below; it ships those three libraries as standalone
UMD builds, for the same reason) from the package index with ``pip download``, takes the three
files out of it and writes ``.dvc/plots/offline.html``: an HTML template for DVC with the scripts
inline. It then sets the template in ``.dvc/config.local`` (``plots.html_template``), which is
not in git, so clones without it keep DVC's default page. Nothing is fetched when the page is viewed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEEL = "panel==1.9.4"
LIBRARIES = (  # in load order: Vega-Lite and Vega-Embed need Vega
    "panel/dist/bundled/vegaplot/vega@6.1.2",
    "panel/dist/bundled/vegaplot/vega-lite@6.3.0",
    "panel/dist/bundled/vegaplot/vega-embed@7.0.2",
)
TEMPLATE = Path(".dvc/plots/offline.html")
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
{refresh_tag}
<title>mgmt-pipeline plots</title>
SCRIPTS
<style>body { font-family: sans-serif; margin: 1.5em; } table { border-spacing: 15px; }</style>
</head>
<body>
<h1>mgmt-pipeline plots</h1>
{plot_divs}
</body>
</html>
"""


def page(scripts: list[str]) -> str:
    """DVC's template: ``{plot_divs}`` and ``{refresh_tag}`` left for DVC, the libraries inline.

    There is no ``{scripts}`` placeholder, so DVC's CDN script tags have nowhere to go."""
    escaped = [s.replace("</script", "<\\/script") for s in scripts]
    return PAGE.replace("SCRIPTS", "\n".join(f"<script>{s}</script>" for s in escaped))


def library_sources(wheel_dir: Path) -> list[str]:
    """The three libraries' source, from the downloaded wheel."""
    wheel = next(wheel_dir.glob("panel-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        return [zf.read(name).decode() for name in LIBRARIES]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel-dir", type=Path, help="a folder that already holds the wheel (no download)")
    parser.add_argument("--no-config", action="store_true", help="write the template only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel_dir = args.wheel_dir or Path(tmp)
        if args.wheel_dir is None:
            cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", tmp]
            if subprocess.run(cmd).returncode:
                sys.exit(f"offline_plots: `pip download {WHEEL}` failed (is the package index reachable?)")
        sources = library_sources(wheel_dir)
    out = ROOT / TEMPLATE
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".partial")
    tmp_out.write_text(page(sources))
    tmp_out.replace(out)
    if not args.no_config:
        # relative paths in the config are relative to .dvc/
        subprocess.run(["dvc", "config", "--local", "plots.html_template", "plots/offline.html"], cwd=ROOT, check=True)
    print(f"offline_plots: wrote {TEMPLATE} ({out.stat().st_size // 1024} KB); `dvc plots show` now renders offline")


if __name__ == "__main__":
    main()
