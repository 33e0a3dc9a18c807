"""Student vs teacher, side by side, in one run: latency p50/p99 and throughput.

    python -m bench.latency                 # reads ./artifacts, ./data, ./params.yaml (fallbacks noted)
    python -m bench.latency --root /path/to/pipeline/copy --teacher-reps 5

Measures (warm-up first, then many interleaved repetitions):
  * student query encoding at batch 1, per backend (torch, onnx, onnx-int8), the way the service
    does it (ONNX backends: kd.backends.OnnxQueryEncoder; torch: SentenceTransformer.encode);
  * FAISS search at k=10 and k=100 on the pipeline's index (HNSW as in artifacts/index);
  * the student query path: encode + search k=10 + result assembly (what /search does, minus HTTP);
  * teacher query encoding, and the rerank path: teacher scoring of the student's top-100 for a
    query, passages re-encoded every time (no cache: what a live rerank costs);
  * corpus encoding throughput (passages/s), student per backend and teacher (on a small sample);
  * teacher/student ratios measured pairwise, back to back, so they hold on a noisy machine.
End-to-end `/search` over HTTP is bench/load.py's job: `--http-cmd "python bench/load.py --no-rerank
--rerank-requests 0 --concurrency 1"` runs it in the same session and checks the targets against the
`scenarios.search` p50_ms/p99_ms of the bench/results/load.json it writes.

Writes bench/results/latency.json and bench/results/latency.md (also printed).
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/latency.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.common import (  # noqa: E402
    CAVEAT,
    RESULTS,
    IndexView,
    Stats,
    fmt,
    load_index,
    load_workspace,
    log,
    machine_info,
    median,
    parse_variant,
    round_robin,
    setup_logging,
    timed,
    write_results,
)
from kd.data.io import passage_text  # noqa: E402


@dataclass
class Variant:
    """A student backend at a given intra-op thread count (torch variants share one model)."""

    backend: str
    threads: int
    model: Any

    @property
    def name(self) -> str:
        return f"{self.backend}@{self.threads}t"


TARGET_P50_MS = 5.0
TARGET_P99_MS = 20.0
TARGET_RATIO = 100.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path("."), help="pipeline checkout to read (default: .)")
    ap.add_argument("--backends", default="torch,onnx,onnx-int8", help="student backends, comma-separated")
    ap.add_argument("--threads", type=int, default=None, help="threads for torch/ORT/FAISS (default: all cores)")
    ap.add_argument(
        "--student-threads",
        default="1,all",
        help="intra-op thread counts to measure each student backend with, comma-separated ('all' = --threads)",
    )
    ap.add_argument("--budget-s", type=float, default=300, help="stop adding teacher reranks (>=1) past this")
    ap.add_argument(
        "--cap-s", type=float, default=30, help="time cap per interleaved measurement (>= 30 rounds are always run)"
    )
    ap.add_argument("--reps", type=int, default=200, help="repetitions of each fast measurement")
    ap.add_argument("--warmup", type=int, default=10, help="warm-up calls before each fast measurement")
    ap.add_argument("--faiss-reps", type=int, default=1000)
    ap.add_argument("--teacher-reps", type=int, default=3, help="teacher reranks of top-k (each ~15 s with mpnet)")
    ap.add_argument("--teacher-query-reps", type=int, default=30)
    ap.add_argument("--rerank-depth", type=int, default=100)
    ap.add_argument("--corpus-sample", type=int, default=512, help="passages per student throughput run")
    ap.add_argument("--teacher-sample", type=int, default=64, help="passages for the teacher throughput run")
    ap.add_argument("--max-passages", type=int, default=1000, help="size of a temporary index (no artifacts/index)")
    ap.add_argument("--no-teacher", action="store_true", help="skip every teacher measurement")
    ap.add_argument("--http-cmd", default=None, help="command that measures /search over HTTP (bench/load.py)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    return ap.parse_args(argv)


def _as_query_batch(emb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(emb, dtype=np.float32).reshape(1, -1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    started = time.perf_counter()
    from kd.backends import default_export_dir, is_fresh, read_marker
    from kd.config import BACKENDS
    from kd.runtime import configure_threads

    backends: list[str] = [b.strip() for b in args.backends.split(",") if b.strip()]
    for spec in backends:
        parse_variant(spec)
    threads = configure_threads(args.threads)
    info = machine_info()
    ws = load_workspace(args.root.resolve(), args.max_passages)
    p = ws.params
    for note in ws.notes:
        log.info("NOTE %s", note)

    # ------------------------------------------------------------ student variants (export on first use)
    import torch

    from kd.backends import load_student

    n_all = threads.torch
    counts = sorted({n_all if t.strip() == "all" else int(t) for t in args.student_threads.split(",") if t.strip()})
    variants: list[Variant] = []
    load_info: dict[str, dict[str, Any]] = {}
    torch_model: Any = None
    for b in backends:
        backend, recipe = parse_variant(b)
        reused = None
        if backend != "torch":
            out = default_export_dir(ws.student_dir, backend, recipe)
            marker = read_marker(out) or {}
            reused = bool(marker) and is_fresh(out, str(marker.get("fingerprint")), str(marker.get("file_name")))
        t0 = time.perf_counter()
        for n in counts:
            if backend == "torch":
                torch_model = torch_model or load_student(ws.student_dir, backend, p.student.max_seq_length)
                model = torch_model
            else:
                model = load_student(ws.student_dir, backend, p.student.max_seq_length, threads=n, recipe=recipe)  # type: ignore[arg-type]
            variants.append(Variant(b, n, model))
        load_info[b] = {"load_s": round(time.perf_counter() - t0, 2)}
        if reused is not None:
            load_info[b]["export_reused"] = reused
            load_info[b]["export_dir"] = str(out)
        log.info("student %-9s loaded in %.1f s (threads %s)", b, load_info[b]["load_s"], counts)

    def set_threads(n: int) -> Callable[[], None]:
        return lambda: torch.set_num_threads(n)

    setups = {v.name: set_threads(v.threads) for v in variants}
    all_threads = set_threads(n_all)

    qp, pp = p.student.query_prefix, p.student.passage_prefix

    def encode(model: Any, texts: list[str], batch_size: int) -> np.ndarray:
        emb = model.encode(
            texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(emb, dtype=np.float32)

    from kd.backends import OnnxQueryEncoder

    def query_encoder(model: Any) -> Callable[[list[str]], np.ndarray]:
        """What the service calls per request: the ONNX fast path where it applies, else encode()."""
        fast = OnnxQueryEncoder.from_model(model)
        return fast if fast is not None else (lambda texts: encode(model, texts, len(texts)))

    ref = next((v for v in variants if v.backend == "torch"), variants[0]).model
    # a temporary index (no artifacts/index) is encoded by float ONNX when measured: same vectors, faster
    builder = next((v for v in variants if v.backend == "onnx" and v.threads == n_all), None)
    all_threads()
    view: IndexView = load_index(
        ws,
        lambda texts: encode(builder.model if builder else ref, [pp + t for t in texts], p.student.batch_size),
        args.max_passages,
    )
    log.info("index: %s", view.description)
    queries = ws.test_queries()
    random.Random(0).shuffle(queries)
    nq = len(queries)
    q_emb = encode(ref, [qp + q for q in queries], p.student.batch_size)
    k_small, k_big = 10, min(args.rerank_depth, int(view.index.ntotal))

    results: dict[str, Any] = {
        "meta": {
            "caveat": CAVEAT,
            "machine": info,
            "threads": threads.__dict__,
            "student_threads": counts,
            "root": str(ws.root),
            "student": str(ws.student_dir),
            "student_trained": ws.student_is_trained,
            "student_max_seq_length": p.student.max_seq_length,
            "index": view.description,
            "index_params": p.index.__dict__,
            "teacher": {"model": p.teacher.model, "kind": p.teacher.kind, "max_seq_length": p.teacher.max_seq_length},
            "queries": nq,
            "notes": ws.notes,
            "reps": args.reps,
        },
        "student_load": load_info,
        "student": {v.name: {"backend": v.backend, "threads": v.threads} for v in variants},
    }
    student = results["student"]

    # ------------------------------------------------------------ student: query encoding at batch 1
    log.info("student query encoding, batch 1: %d reps x %s", args.reps, [v.name for v in variants])

    def encode_one(model: Any) -> Callable[[int], Any]:
        enc = query_encoder(model)
        return lambda i: enc([qp + queries[i % nq]])

    enc_calls = {v.name: encode_one(v.model) for v in variants}
    for name, runs in round_robin(enc_calls, args.reps, args.warmup, setups, args.cap_s).items():
        student[name]["encode_query_b1_ms"] = Stats.of(runs).as_dict()

    # ------------------------------------------------------------ FAISS
    all_threads()
    log.info("FAISS search k=%d and k=%d: %d reps", k_small, k_big, args.faiss_reps)
    index = view.index

    def search_one(k: int) -> Callable[[int], Any]:
        return lambda i: index.search(_as_query_batch(q_emb[i % nq]), k)

    search_calls = {f"k{k}": search_one(k) for k in (k_small, k_big)}
    results["faiss"] = {
        name: Stats.of(secs).as_dict() for name, secs in round_robin(search_calls, args.faiss_reps, 50).items()
    }
    results["faiss"]["class"] = type(index).__name__
    results["faiss"]["ntotal"] = int(index.ntotal)
    if hasattr(index, "hnsw"):
        results["faiss"]["ef_search"] = int(index.hnsw.efSearch)

    # ------------------------------------------------------------ student path (encode + search + assembly)
    passages, docids = view.passages, view.docids

    def student_path(enc: Callable[[list[str]], np.ndarray], query: str, k: int = k_small) -> list[dict[str, Any]]:
        emb = enc([qp + query])
        scores, rows = index.search(_as_query_batch(emb), k)
        return [
            {"id": docids[r], "score": float(s), "title": passages[r].get("title", ""), "text": passages[r]["text"]}
            for r, s in zip(rows[0], scores[0])
            if r >= 0
        ]

    log.info("student query path (encode + search k=%d + assembly): %d reps", k_small, args.reps)

    def path_one(model: Any) -> Callable[[int], Any]:
        enc = query_encoder(model)
        return lambda i: student_path(enc, queries[i % nq])

    path_calls = {v.name: path_one(v.model) for v in variants}
    for name, runs in round_robin(path_calls, args.reps, args.warmup, setups, args.cap_s).items():
        student[name]["query_path_ms"] = Stats.of(runs).as_dict()

    # ------------------------------------------------------------ student corpus throughput (all threads)
    sample_rows = list(range(len(passages)))
    random.Random(1).shuffle(sample_rows)
    sample = [pp + passage_text(passages[r]) for r in sample_rows[: args.corpus_sample]]
    log.info("student corpus encoding: %d passages, batch %d", len(sample), p.student.batch_size)
    bulk = {v.backend: v for v in variants if v.threads == n_all}

    def corpus_one(model: Any) -> Callable[[int], Any]:
        return lambda i: encode(model, sample, p.student.batch_size)

    corpus_calls = {b: corpus_one(v.model) for b, v in bulk.items()}
    all_threads()
    for v in bulk.values():
        encode(v.model, sample[:32], p.student.batch_size)  # warm-up
    corpus_pps: dict[str, float] = {}
    for name, runs in round_robin(corpus_calls, 2, 0).items():
        corpus_pps[name] = round(len(sample) / median(runs), 1)
        student[bulk[name].name]["corpus_passages_per_s"] = corpus_pps[name]
    results["student_corpus_passages_per_s"] = corpus_pps

    # ------------------------------------------------------------ teacher (all threads)
    ratios: dict[str, dict[str, Any]] = {}
    if not args.no_teacher:
        from kd.models import BiEncoderTeacher, load_teacher

        all_threads()
        t0 = time.perf_counter()
        teacher = load_teacher(p.teacher)
        teacher_info: dict[str, Any] = {"load_s": round(time.perf_counter() - t0, 2), "threads": n_all}
        log.info("teacher %s (%s) loaded in %.1f s", p.teacher.model, p.teacher.kind, teacher_info["load_s"])
        _, cand_rows = index.search(np.ascontiguousarray(q_emb), k_big)  # each query's student top-k
        candidates = [[passage_text(passages[r]) for r in rows if r >= 0] for rows in cand_rows]

        def rerank(i: int, depth: int = k_big) -> list[int]:
            cands = candidates[i % nq][:depth]
            scores = teacher.score([queries[i % nq]] * len(cands), cands)
            return [int(j) for j in np.argsort(-scores, kind="stable")]

        rerank(0, 16)  # warm-up
        if isinstance(teacher, BiEncoderTeacher):
            tq = round_robin({"t": lambda i: teacher.encode_queries([queries[i % nq]])}, args.teacher_query_reps, 3)
            teacher_info["encode_query_b1_ms"] = Stats.of(tq["t"]).as_dict()
            tsample = [passage_text(passages[r]) for r in sample_rows[: args.teacher_sample]]
            log.info("teacher corpus encoding: %d passages, batch %d", len(tsample), p.teacher.batch_size)
            t_secs = timed(lambda: teacher.encode_passages(tsample))
            teacher_info["corpus_passages_per_s"] = round(len(tsample) / t_secs, 2)
        log.info("teacher rerank of top-%d: up to %d reps, each paired with student paths", k_big, args.teacher_reps)
        rerank_secs: list[float] = []
        per_rep: dict[str, list[float]] = {v.name: [] for v in variants}
        for rep in range(args.teacher_reps):
            if rep and time.perf_counter() - started + median(rerank_secs) > args.budget_s:
                log.info("  time budget (%.0f s) reached: %d reranks", args.budget_s, rep)
                break
            qi = rep * 7  # spread over the query set
            paired = round_robin(path_calls, 15, 2, setups)
            all_threads()
            r_secs = timed(partial(rerank, qi))
            rerank_secs.append(r_secs)
            for name, path_secs in paired.items():
                per_rep[name].append(r_secs / median(path_secs))
            log.info("  rerank %d: %.2f s (%s)", rep + 1, r_secs,
                     ", ".join(f"{n} x{per_rep[n][-1]:.0f}" for n in per_rep))  # fmt: skip
        teacher_info["rerank_depth"] = k_big
        teacher_info["rerank_ms"] = Stats.of(rerank_secs).as_dict()
        teacher_info["rerank_passages_per_s"] = round(k_big / median(rerank_secs), 2)
        results["teacher"] = teacher_info
        for v in variants:
            s_v = student[v.name]
            ratios[v.name] = {
                "teacher_rerank_over_student_path_median": round(median(per_rep[v.name]), 1),
                "per_rep": [round(x, 1) for x in per_rep[v.name]],
                "of_p50s": round(teacher_info["rerank_ms"]["p50"] / s_v["query_path_ms"]["p50"], 1),
            }
            if "encode_query_b1_ms" in teacher_info:
                ratios[v.name]["teacher_over_student_query_encode_p50"] = round(
                    teacher_info["encode_query_b1_ms"]["p50"] / s_v["encode_query_b1_ms"]["p50"], 1
                )
            if "corpus_passages_per_s" in teacher_info and v.backend in corpus_pps:
                ratios[v.name]["student_over_teacher_corpus_throughput"] = round(
                    corpus_pps[v.backend] / teacher_info["corpus_passages_per_s"], 1
                )
    results["ratios"] = ratios

    # ------------------------------------------------------------ HTTP (bench/load.py) hook
    http = run_http(args.http_cmd, args.out) if args.http_cmd else None
    if http is not None:
        results["http"] = http
    results["targets"] = targets(results, [v.name for v in variants], http)
    results["meta"]["wall_s"] = round(time.perf_counter() - started, 1)
    results["meta"]["backends_known"] = list(BACKENDS)
    md = markdown(results, [v.name for v in variants], list(corpus_pps))
    js, mdp = write_results("latency", results, md, args.out)
    print(md)
    log.info("wrote %s and %s (%.0f s)", js, mdp, results["meta"]["wall_s"])
    return 0


def run_http(cmd: str, out_dir: Path) -> dict[str, Any]:
    """Run bench/load.py (or any command) now, and pick up its JSON if it wrote one."""
    log.info("HTTP load: %s", cmd)
    load_json = out_dir / "load.json"
    before = load_json.stat().st_mtime if load_json.exists() else None
    proc = subprocess.run(shlex.split(cmd), capture_output=True, text=True)
    out: dict[str, Any] = {"cmd": cmd, "rc": proc.returncode, "stdout_tail": proc.stdout[-2000:]}
    if proc.returncode != 0:
        out["stderr_tail"] = proc.stderr[-2000:]
    if load_json.exists() and load_json.stat().st_mtime != before:
        try:
            out["load_json"] = json.loads(load_json.read_text())
        except json.JSONDecodeError:
            out["load_json"] = None
    return out


def _find(data: Any, key: str) -> float | None:
    """First numeric value under `key` anywhere in a JSON tree (bench/load.py's layout is its own)."""
    if isinstance(data, dict):
        if isinstance(data.get(key), int | float):
            return float(data[key])
        for v in data.values():
            found = _find(v, key)
            if found is not None:
                return found
    if isinstance(data, list):
        for v in data:
            found = _find(v, key)
            if found is not None:
                return found
    return None


def targets(results: dict[str, Any], backends: list[str], http: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"search_p50_ms": TARGET_P50_MS, "search_p99_ms": TARGET_P99_MS, "ratio": TARGET_RATIO}
    load = (http or {}).get("load_json")
    if load:
        search = (load.get("scenarios") or {}).get("search") or load  # bench/load.py: scenarios.search.p50_ms
        p50, p99 = _find(search, "p50_ms"), _find(search, "p99_ms")
        if p50 is not None and p99 is not None:
            out["http_search"] = {"p50_ms": p50, "p99_ms": p99, "met": p50 <= TARGET_P50_MS and p99 <= TARGET_P99_MS}
    for b in backends:
        path = results["student"][b]["query_path_ms"]
        entry: dict[str, Any] = {
            "in_process_path_p50_met": path["p50"] <= TARGET_P50_MS,
            "in_process_path_p99_met": path["p99"] <= TARGET_P99_MS,
        }
        r = results["ratios"].get(b)
        if r:
            entry["ratio_met"] = r["teacher_rerank_over_student_path_median"] >= TARGET_RATIO
        out[b] = entry
    return out


def markdown(r: dict[str, Any], backends: list[str], bulk: list[str]) -> str:
    m = r["meta"]
    lines = [
        "# Latency: student backends vs teacher",
        "",
        f"{m['machine']['cpu']}, {m['machine']['cores']} cores, threads {m['threads']['torch']}, "
        f"load avg at start {m['machine']['loadavg_at_start']}; {m['machine']['time']}; run took {m['wall_s']} s.",
        f"Student: `{m['student']}` ({'trained' if m['student_trained'] else 'UNTRAINED fallback'}), "
        f"max_seq_length {m['student_max_seq_length']}. Index: {m['index']}. Queries: {m['queries']} test queries.",
        "",
        f"> {m['caveat']}",
        "",
    ]
    if m["notes"]:
        lines += ["Fallbacks used:", *[f"- {n}" for n in m["notes"]], ""]
    lines += ["| measurement | variant | n | p50 ms | p99 ms | mean ms |", "|---|---|---:|---:|---:|---:|"]

    def row(name: str, variant: str, s: dict[str, Any]) -> None:
        lines.append(f"| {name} | {variant} | {s['n']} | {fmt(s['p50'])} | {fmt(s['p99'])} | {fmt(s['mean'])} |")

    for b in backends:
        row("student query encode (batch 1)", b, r["student"][b]["encode_query_b1_ms"])
    for k in (k for k in r["faiss"] if k.startswith("k")):
        row(f"FAISS search {k.replace('k', 'k=')}", r["faiss"]["class"], r["faiss"][k])
    for b in backends:
        row("student path: encode + search k=10 + assembly", b, r["student"][b]["query_path_ms"])
    t = r.get("teacher")
    if t:
        if "encode_query_b1_ms" in t:
            row("teacher query encode (batch 1)", r["meta"]["teacher"]["model"], t["encode_query_b1_ms"])
        row(f"teacher rerank of top-{t['rerank_depth']} (no cache)", r["meta"]["teacher"]["model"], t["rerank_ms"])
    lines += ["", f"| corpus encoding ({m['threads']['torch']} threads) | passages/s |", "|---|---:|"]
    for b in bulk:
        lines.append(f"| student {b} | {fmt(r['student_corpus_passages_per_s'][b], 1)} |")
    if t and "corpus_passages_per_s" in t:
        lines.append(f"| teacher {r['meta']['teacher']['model']} | {fmt(t['corpus_passages_per_s'], 2)} |")
    if r["ratios"]:
        lines += [
            "",
            f"| student variant | teacher rerank top-{t['rerank_depth'] if t else 100} / student path (paired median) | per rep "
            "| corpus throughput student/teacher | query encode teacher/student |",
            "|---|---:|---|---:|---:|",
        ]
        for b, x in r["ratios"].items():
            lines.append(
                f"| {b} | {fmt(x['teacher_rerank_over_student_path_median'], 0)}x | "
                f"{', '.join(fmt(v, 0) for v in x['per_rep'])} | "
                f"{fmt(x.get('student_over_teacher_corpus_throughput', float('nan')), 1)}x | "
                f"{fmt(x.get('teacher_over_student_query_encode_p50', float('nan')), 1)}x |"
            )
    tg = r["targets"]
    lines += ["", f"Targets: /search p50 <= {TARGET_P50_MS:g} ms, p99 <= {TARGET_P99_MS:g} ms; "
              f"student path >= {TARGET_RATIO:g}x faster than the teacher rerank of top-100."]  # fmt: skip
    if "http_search" in tg:
        h = tg["http_search"]
        lines.append(f"- HTTP /search (bench/load.py): p50 {fmt(h['p50_ms'])} ms, p99 {fmt(h['p99_ms'])} ms: "
                     f"{'MET' if h['met'] else 'NOT met'}")  # fmt: skip
    else:
        lines.append("- HTTP /search: not measured here (run bench/load.py, or pass --http-cmd); "
                     "the in-process path below is its lower bound.")  # fmt: skip
    for b in backends:
        e = tg[b]
        s = r["student"][b]["query_path_ms"]
        ok = e["in_process_path_p50_met"] and e["in_process_path_p99_met"]
        text = f"- {b}: in-process path p50 {fmt(s['p50'])} / p99 {fmt(s['p99'])} ms: {'MET' if ok else 'NOT met'}"
        if "ratio_met" in e:
            text += f"; ratio {fmt(r['ratios'][b]['teacher_rerank_over_student_path_median'], 0)}x: " + (
                "MET" if e["ratio_met"] else "NOT met"
            )
        lines.append(text)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
