"""kd.paths: the shared cache's sweep leaves a folder in use (or recently used) alone."""

from __future__ import annotations

import os
import time
from pathlib import Path

from kd.paths import sweep_stale


def test_sweep_removes_only_old_folders(tmp_path: Path) -> None:
    old, recent, mine = tmp_path / "old", tmp_path / "recent", tmp_path / "mine"
    for d in (old, recent, mine):
        d.mkdir()
        (d / "part-1-00000.parquet").write_text("x")
    month_ago = time.time() - 30 * 86400
    for d in (old, mine):
        os.utime(d, (month_ago, month_ago))
    assert sweep_stale(tmp_path, keep="mine", max_age_days=14) == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "recent"]
    assert sweep_stale(tmp_path / "not-made-yet", keep="mine") == []  # a first run: no cache folder yet
