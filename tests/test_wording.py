"""Tracked files speak about the project, not about how the work on it was organised.

No words for units of work or the people's machines ("this stop", "the fifth round", "the same session",
"box B", "the bf16 box", "issue-11", "the prototype commit"): hardware is named by what it is ("a 2-core
AMD EPYC with avx512_bf16", "AVX2 only"), history by date and commit (docs/experiments.md). Committed
results under bench/results/ hold no absolute machine paths (bench/portable.py makes them portable).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SELF = "tests/test_wording.py"  # quotes every pattern below

ORDINAL = r"first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|numbered"
WORK_WORDS = re.compile(
    r"\b(?:this|that|the next|next|the previous|an early|the same|a later|the last|until this|chosen this) stops?\b"
    rf"|\b(?:{ORDINAL}) rounds?\b"
    r"|\b(?:this|that|the same|same|the next|the previous|an earlier|a later) session\b"
    r"|\bbox ?[AB]\b|\bbox[AB]_?\w*|\bboxes [AB]\b"
    r"|\b(?:bf16|no-bf16|float32|AVX2|reference|prototype|previous) box(?:es)?\b"
    r"|\bissue[- #]?\d+|\bthe issue'?s\b"
    r"|\bprototype commit\b|\bequal to main's\b|\bthe promise\b|\b97% target\b|\b20-min budget\b",
    flags=re.IGNORECASE,
)
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:root|work|tmp|home|Users)/")
MAX_BYTES = 1_000_000  # larger tracked files are vendored or generated (plots/template.html inlines vega)


def tracked_text_files() -> list[str]:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode()
    out = []
    for name in filter(None, names.split("\0")):
        path = ROOT / name
        if not path.is_file() or path.stat().st_size > MAX_BYTES:
            continue
        try:
            path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary
        out.append(name)
    return out


def offences(name: str) -> list[str]:
    """`file:line: text` for each line of `name` with a word about the work, or a machine path in a result."""
    found = []
    for number, line in enumerate((ROOT / name).read_text(encoding="utf-8").splitlines(), 1):
        hit = WORK_WORDS.search(line)
        if hit is None and name.startswith("bench/results/"):
            hit = MACHINE_PATH.search(line)
        if hit is not None:
            found.append(f"{name}:{number}: {hit.group(0)!r} in {line.strip()[:160]}")
    return found


def test_tracked_files_speak_about_the_project() -> None:
    found = [o for name in tracked_text_files() if name != SELF for o in offences(name)]
    assert not found, "words about how the work was organised, or machine paths in results:\n" + "\n".join(found)


def test_the_patterns_catch_what_they_should_and_spare_the_rest() -> None:
    bad = [
        "chosen this stop, on pooled dev", "Seed 2 was run in the next stop", "README, fifth round",
        "the same session", "the previous box B", "bench/results/boxB/latency.md", "on the bf16 box",
        "The issue-11 numbers", "The issue's bar", "the prototype commit", "mpnet on the reference box",
        "equal to main's", "an early stop before the dev split",
    ]  # fmt: skip
    good = [
        "once per test session", "One local Ray session", "alternating rounds", "--rounds 2", "round(x, 2)",
        "stops by itself", "early stopping", "a 2-core AMD EPYC with avx512_bf16", "AVX2 only",
        "issues with the index", "the session options of ONNX Runtime", "stop after the train stage",
    ]  # fmt: skip
    assert [t for t in bad if not WORK_WORDS.search(t)] == []
    assert [t for t in good if WORK_WORDS.search(t)] == []
    assert MACHINE_PATH.search('"params": "/work/main/params.yaml"') and MACHINE_PATH.search("root `/tmp/x`")
    assert not MACHINE_PATH.search("GET /search/batch, http://127.0.0.1:8000/schema, .../exp, ~/work/x")
