"""Machine-independent paths in bench results: what a committed result file may say about where it ran.

No heavy imports: `bench/stage_times.py` and `bench/load.py` use it before any model is loaded.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ABS_PATH = re.compile(r"(?<![\w.:/~-])/(?:[\w.+-]+/)*[\w.+-]+")


def portable_text(text: str, roots: tuple[Path, ...] = ()) -> str:
    """`text` with every absolute filesystem path in it made machine-independent, for committed results.

    Inside the repository (or one of `roots`, e.g. the scratch copy a bench ran in) a path becomes relative
    to it; inside a Python installation, `site-packages/...` or `python3.X/...`; anything else `.../<name>`.
    Strings that only look like paths (`/search`, `/schema/openapi.json`: no such top-level folder) stay.

    Example::

        >>> portable_text(f"root `{REPO}/artifacts/index`, log /tmp/run/data.log")
        'root `artifacts/index`, log .../data.log'
    """

    def fix(m: re.Match[str]) -> str:
        path = m.group(0)
        if not Path("/" + path.split("/")[1]).is_dir():
            return path  # a URL path or a route, not a file
        for root in (REPO, *roots):
            r = str(root).rstrip("/")
            if path == r:
                return "."
            if path.startswith(r + "/"):
                return path[len(r) + 1 :]
        for marker in ("/site-packages/", "/dist-packages/"):
            if marker in path:
                return marker.strip("/") + "/" + path.split(marker, 1)[1]
        stdlib = re.search(r"/lib/(python3\.\d+/.*)$", path)
        if stdlib:
            return stdlib.group(1)
        return ".../" + Path(path).name

    return ABS_PATH.sub(fix, text)


def portable(value: Any, roots: tuple[Path, ...] = ()) -> Any:
    """A JSON-able `value` with `portable_text` applied to every string (and Path) in it."""
    if isinstance(value, dict):
        return {k: portable(v, roots) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [portable(v, roots) for v in value]
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        return portable_text(value, roots)
    return value
