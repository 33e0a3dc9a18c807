"""Rebuild plots/template.html: DVC's HTML page with vega, vega-lite and vega-embed inlined (no CDN).

    npm install --prefix /tmp/vega vega@5 vega-lite@5 vega-embed@6
    python plots/build_template.py /tmp/vega/node_modules

`.dvc/config` points `plots.html_template` at the result, so a plain `dvc plots show` renders with no
network. DVC fills `{plot_divs}` (and `{refresh_tag}`); the page has no `{scripts}` placeholder,
which is where DVC would put its CDN <script src=...> tags.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

LIBS = (
    ("vega", "build/vega.min.js"),
    ("vega-lite", "build/vega-lite.min.js"),
    ("vega-embed", "build/vega-embed.min.js"),
)
OUT = Path(__file__).with_name("template.html")

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
    <!-- Inlined, so the page renders offline: %(versions)s (BSD-3-Clause, (c) the Vega project /
         University of Washington Interactive Data Lab). Rebuild with plots/build_template.py. -->
%(scripts)s
    <style>
        body { font-family: sans-serif; }
        table { border-spacing: 15px; }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def build(node_modules: Path) -> str:
    scripts, versions = [], []
    for name, rel in LIBS:
        js = (node_modules / name / rel).read_text(encoding="utf8")
        if "</script" in js.lower() or "{plot_divs}" in js or "{scripts}" in js or "{refresh_tag}" in js:
            raise SystemExit(f"{name}: the bundle holds a string that would break the page")
        version = json.loads((node_modules / name / "package.json").read_text(encoding="utf8"))["version"]
        versions.append(f"{name} {version}")
        scripts.append(f'    <script type="text/javascript">/* {name} {version} */\n{js.strip()}\n    </script>')
    return PAGE % {"versions": ", ".join(versions), "scripts": "\n".join(scripts)}


if __name__ == "__main__":
    OUT.write_text(build(Path(sys.argv[1] if len(sys.argv) > 1 else "node_modules")), encoding="utf8")
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB)")
