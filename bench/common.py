"""Shared pieces of the bench scripts: timing statistics, and the pipeline's artifacts with fallbacks.

Every script reads what the pipeline made under `--root` (default: the current folder):
`artifacts/student`, `artifacts/index`, `data/`, `params.yaml`. Whatever is missing is replaced by
the packaged MiniLM, a temporary index, a corpus slice built from the Python docs, or the default
params, and every replacement is recorded in `Workspace.notes` so the output says so.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from bench.portable import REPO, portable, portable_text  # noqa: E402, F401  (re-exported for the scripts)
from kd.config import Params, PythonDocsFaqData  # noqa: E402
from kd.data.io import Dataset  # noqa: E402
from kd.params import load_params

RESULTS = REPO / "bench" / "results"
CAVEAT = (
    "Timings on a shared, noisy machine (other processes use the CPU): compare numbers within one run, "
    "and prefer the interleaved ratios to absolute values."
)

log = logging.getLogger("bench")


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="[bench] %(message)s")
    for noisy in ("sentence_transformers", "httpx", "faiss", "optimum"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore")


# ---------------------------------------------------------------- timing


@dataclass(frozen=True)
class Stats:
    """Latency statistics in milliseconds."""

    n: int
    p50: float
    p90: float
    p99: float
    mean: float
    min: float
    max: float

    @classmethod
    def of(cls, seconds: list[float]) -> Stats:
        ms = np.asarray(seconds, dtype=np.float64) * 1e3
        if ms.size == 0:
            nan = float("nan")
            return cls(0, nan, nan, nan, nan, nan, nan)
        q = np.percentile(ms, [50, 90, 99])
        return cls(
            int(ms.size), float(q[0]), float(q[1]), float(q[2]), float(ms.mean()), float(ms.min()), float(ms.max())
        )

    def as_dict(self) -> dict[str, float | int]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def round_robin(
    calls: Mapping[str, Callable[[int], Any]],
    reps: int,
    warmup: int,
    setups: Mapping[str, Callable[[], Any]] | None = None,
    max_s: float | None = None,
    min_reps: int = 30,
) -> dict[str, list[float]]:
    """Time each named call `reps` times, interleaved (a, b, c, a, b, c, ...) so slow spells of a
    shared machine hit every variant alike. Call `i` gets the repetition index (e.g. to pick a query);
    `setups[name]` (untimed) runs before each call of `name` (e.g. to set its thread count).
    `max_s`: stop after the round that passes this many seconds, once `min_reps` rounds are done."""
    setups = setups or {}
    noop: Callable[[], Any] = lambda: None  # noqa: E731
    for i in range(warmup):
        for name, fn in calls.items():
            setups.get(name, noop)()
            fn(i)
    out: dict[str, list[float]] = {name: [] for name in calls}
    started = time.perf_counter()
    for i in range(reps):
        if max_s is not None and i >= min_reps and time.perf_counter() - started > max_s:
            log.info("  time cap (%.0f s) reached after %d of %d rounds", max_s, i, reps)
            break
        for name, fn in calls.items():
            setups.get(name, noop)()
            start = time.perf_counter()
            fn(i)
            out[name].append(time.perf_counter() - start)
    return out


# ---------------------------------------------------------------- workspace


@dataclass
class Workspace:
    root: Path
    params: Params
    student_dir: Path
    student_is_trained: bool
    dataset: Dataset
    notes: list[str] = field(default_factory=list)

    def test_queries(self, limit: int | None = None) -> list[str]:
        queries = list(self.dataset.queries.get("test", {}).values()) or list(
            self.dataset.queries.get("dev", {}).values()
        )
        if not queries:
            queries = ["How do I read a file?", "What is a generator?", "How to sort a dict by value?"]
        return queries[:limit] if limit else queries


def load_workspace(root: Path, max_passages: int = 2000, seed: int = 13) -> Workspace:
    """The pipeline's params, student and data under `root`, with the fallbacks noted."""
    from kd.data.io import read_dataset
    from kd.models.store import minilm_path

    notes: list[str] = []
    params_file = root / "params.yaml"
    if params_file.exists():
        params = load_params(params_file)
    else:
        params = Params()
        notes.append(f"{params_file} missing: default params")
    student = root / "artifacts" / "student"
    trained = (student / "modules.json").is_file()
    if not trained:
        student = minilm_path()
        notes.append(f"{root / 'artifacts/student'} missing: packaged (untrained) all-MiniLM-L6-v2 from {student}")
    data_dir = root / "data"
    if (data_dir / "corpus.jsonl").exists():
        dataset = read_dataset(data_dir)
    else:
        dataset = docs_slice(params, max_passages, seed)
        notes.append(
            f"{data_dir} missing: a {len(dataset.corpus)}-passage slice of the Python docs "
            f"(kd.data.python_docs_faq, max_passages={max_passages})"
        )
    return Workspace(root, params, student, trained, dataset, notes)


def docs_slice(params: Params, max_passages: int, seed: int = 13) -> Dataset:
    """The default dataset with at most `max_passages` passages (all FAQ test answers kept)."""
    from kd.data import python_docs_faq

    d = params.data if isinstance(params.data, PythonDocsFaqData) else PythonDocsFaqData()
    return python_docs_faq.load(
        d.debian_package or "python3.11-doc",
        d.doc_dir,
        min_words=d.min_words,
        max_words=d.max_words,
        max_passages=max_passages,
        max_train_queries=d.max_train_queries,
        max_dev_queries=d.max_dev_queries,
        max_test_queries=d.max_test_queries,
        exclude=tuple(d.exclude),
        seed=seed,
    )


def parse_variant(spec: str) -> tuple[str, str]:
    """`onnx-int8:full` -> ("onnx-int8", "full"); a plain backend name gets the default recipe."""
    from kd.choices import check_backend
    from kd.models.onnx_export import RECIPES

    backend, _, recipe = spec.strip().partition(":")
    check_backend(backend)
    recipe = recipe or "accurate"
    if recipe not in RECIPES:
        raise SystemExit(f"error: int8 recipe {recipe!r} in {spec!r} is unknown: use one of {', '.join(RECIPES)}")
    return backend, recipe


# ---------------------------------------------------------------- output


def machine_info() -> dict[str, Any]:
    from kd.models.runtime import available_cores, cpu_model, package_versions, pick_quant_config

    versions = package_versions(
        ("torch", "onnxruntime", "sentence-transformers", "transformers", "faiss-cpu", "optimum-onnx")
    )
    model = cpu_model()
    try:
        load = list(os.getloadavg())
    except OSError:
        load = []
    return {
        "cpu": model,
        "cores": available_cores(),
        "int8_config": pick_quant_config(),
        "loadavg_at_start": [round(x, 2) for x in load],
        "python": platform.python_version(),
        "versions": versions,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_results(
    name: str, data: dict[str, Any], markdown: str, out_dir: Path = RESULTS, roots: tuple[Path, ...] = ()
) -> tuple[Path, Path]:
    """`<out_dir>/<name>.json` and `.md`, with machine paths made portable (`portable`)."""
    from kd.atomic import write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    js, md = out_dir / f"{name}.json", out_dir / f"{name}.md"
    write_text(js, json.dumps(portable(json.loads(json.dumps(data, default=str)), roots), indent=2) + "\n")
    write_text(md, portable_text(markdown, roots))
    return js, md


def fmt(x: float, digits: int = 2) -> str:
    if x != x:  # nan
        return "–"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def dvc_exp_run(name: str, overrides: list[str], target: str | None = None) -> None:
    """`dvc exp run [target] --name NAME -S o1 -S o2 ...` in this checkout; exit with its output if it fails."""
    cmd = ["dvc", "exp", "run", *([target] if target else []), "--name", name]
    for o in overrides:
        cmd += ["-S", o]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def append_rows(path: Path, fields: list[str], rows: list[dict[str, Any]]) -> None:
    """Append rows to a CSV (header first if new). Opened per call: `dvc exp run` replaces tracked
    files (a new inode), so a handle kept open across runs would write to the replaced file."""
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def cpu_label() -> str:
    """`bf16` where encodes run under bf16 autocast (`use_bf16("auto")`: native and measured faster), else `no-bf16` (float32)."""
    from kd.models.runtime import use_bf16

    return "bf16" if use_bf16("auto") else "no-bf16"
