"""The smoke pipeline, run for real once per test session in a temporary copy of the repo.

`smoke_repo` is a git + DVC copy of the working tree in which `dvc exp run -S +experiment=smoke`
has run end to end (Hydra composition included). Tests that need artifacts read them there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ["-S", "+experiment=smoke"]
GIT_ENV = {
    "GIT_AUTHOR_NAME": "kd-tests",
    "GIT_AUTHOR_EMAIL": "kd-tests@localhost",
    "GIT_COMMITTER_NAME": "kd-tests",
    "GIT_COMMITTER_EMAIL": "kd-tests@localhost",
}


def env(cache: Path | None = None) -> dict[str, str]:
    out = dict(os.environ)
    out.update(GIT_ENV)
    out.update({"DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    out["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{out.get('PATH', '')}"
    out.pop("MLFLOW_TRACKING_URI", None)
    if cache is not None:
        out["KD_CACHE_DIR"] = str(cache)
    return out


def sh(cmd: list[str], cwd: Path, cache: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env(cache), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def copy_repo(dest: Path) -> Path:
    """Tracked + untracked-not-ignored files of this checkout, as a fresh git repo with .dvc/."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for rel in files:
        src = ROOT / rel
        if src.is_file() and not rel.startswith((".dvc/", "data/", "artifacts/")) and rel not in ("dvc.lock", "metrics.json"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for name in ("config", ".gitignore"):
        if (ROOT / ".dvc" / name).exists():
            (dest / ".dvc").mkdir(exist_ok=True)
            shutil.copy2(ROOT / ".dvc" / name, dest / ".dvc" / name)
    if (ROOT / ".dvc" / "plots").is_dir():  # custom plot templates named in dvc.yaml
        shutil.copytree(ROOT / ".dvc" / "plots", dest / ".dvc" / "plots")
    sh(["git", "init", "-q", "-b", "main"], dest)
    sh(["git", "add", "-A"], dest)
    sh(["git", "commit", "-qm", "copy for tests"], dest)
    return dest


def shared_cache(tmp_root: Path) -> Path:
    """A per-session cache seeded with the Debian doc package (so no re-download per copy)."""
    cache = tmp_root / "cache"
    cache.mkdir(exist_ok=True)
    src = ROOT / ".cache" / "debian"
    if src.exists() and not (cache / "debian").exists():
        shutil.copytree(src, cache / "debian", symlinks=True)
    return cache


@pytest.fixture(scope="session")
def smoke_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("smoke")
    repo = copy_repo(root / "repo")
    cache = shared_cache(root)
    sh(["dvc", "exp", "run", *SMOKE], repo, cache)
    yield repo


@pytest.fixture(scope="session")
def smoke_cache(smoke_repo: Path) -> Path:
    return smoke_repo.parent / "cache"
