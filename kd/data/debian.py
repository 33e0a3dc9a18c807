"""Debian documentation packages as a corpus source: download once with `apt-get download`, unpack, cache.

No root is needed (`apt-get download` writes to the current folder); the package's sources or built site
land in `.cache/debian/<package>/` and later builds reuse them.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from kd.errors import DataError

CACHE_DIR = Path(".cache") / "debian"


def fetch_debian_docs(package: str, cache: Path = CACHE_DIR) -> tuple[Path, str]:
    """`apt-get download` + `dpkg-deb -x` once; return (the `_sources` folder, package version)."""
    target = cache / package
    done = target / ".version"
    if done.exists():
        return _find_sources(target), done.read_text().strip()
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise DataError(
            f"apt-get/dpkg-deb not found, so the Debian package {package} can't be fetched. "
            "Point data.doc_dir at a CPython Doc/ folder instead (`-S data.doc_dir=/path/to/Doc`)."
        )
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            ["apt-get", "download", package], cwd=tmp, capture_output=True, text=True
        )
        debs = list(Path(tmp).glob("*.deb"))
        if proc.returncode != 0 or not debs:
            raise DataError(
                f"`apt-get download {package}` failed: {proc.stderr.strip()[-300:]}. "
                "Run `apt-get update` first, or set data.doc_dir to a local CPython Doc/ folder."
            )
        version = subprocess.run(
            ["dpkg-deb", "-f", str(debs[0]), "Version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=cache))
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(staging)], check=True)
        (staging / ".version").write_text(f"{package} {version}\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return _find_sources(target), done.read_text().strip()


def _find_sources(root: Path) -> Path:
    """The reST `_sources/` folder if the package ships one, else the HTML folder holding `faq/`."""
    hits = sorted(root.rglob("_sources")) or sorted(p.parent.parent for p in root.rglob("faq/*.html"))
    if not hits:
        raise DataError(f"no _sources folder and no faq/*.html under {root}: is this a Sphinx docs package?")
    return hits[0]
