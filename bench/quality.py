"""Retrieval quality per student backend: nDCG@10 of onnx / onnx-int8 against PyTorch on the same retrieval.

    python -m bench.quality                       # FAQ test queries over a 2000-passage docs slice
    python -m bench.quality --use-data            # the pipeline's data/ instead (full corpus: slower)
    python -m bench.quality --root /path/to/copy  # that copy's artifacts/student and params.yaml

Exact search (FAISS flat inner product) so only the encoder differs. Each backend encodes both the
corpus and the queries (what `student.backend` does to the `index` stage and the service); the
"torch corpus" column keeps the PyTorch corpus and swaps only the query encoder (a service switched
to ONNX over an index built by PyTorch). The bar: nDCG@10 loss vs PyTorch <= 0.005.

Writes bench/results/quality.json and bench/results/quality.md (also printed).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/quality.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.common import (  # noqa: E402
    CAVEAT,
    RESULTS,
    docs_slice,
    fmt,
    load_workspace,
    log,
    machine_info,
    parse_variant,
    setup_logging,
    write_results,
)
from kd.config import Params  # noqa: E402
from kd.data.io import passage_text  # noqa: E402

MAX_LOSS = 0.005


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path("."), help="pipeline checkout to read (default: .)")
    ap.add_argument(
        "--backends",
        default="torch,onnx,onnx-int8,onnx-int8:full",
        help="comma-separated; `onnx-int8:full` = the int8 recipe that quantizes every op (kd.models.onnx_export.RECIPES)",
    )
    ap.add_argument("--max-passages", type=int, default=2000, help="size of the docs slice")
    ap.add_argument("--use-data", action="store_true", help="use <root>/data (the pipeline's dataset) instead")
    ap.add_argument("--split", default="test", help="query split (default: test = the FAQ questions)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    started = time.perf_counter()
    from kd.models.backends import load_student
    from kd.models.loading import encode
    from kd.models.runtime import configure_threads
    from kd.retrieval import search
    from kd.retrieval.metrics import evaluate, paired_test, per_query

    specs = [b.strip() for b in args.backends.split(",") if b.strip()]
    for spec in specs:
        parse_variant(spec)
    backends = ["torch", *[b for b in specs if b != "torch"]]
    threads = configure_threads(args.threads)
    ws = load_workspace(args.root.resolve(), args.max_passages)
    p = ws.params
    if not args.use_data:  # a fixed slice (default data settings), so runs compare whatever params.yaml says
        ws.notes = [n for n in ws.notes if "slice" not in n]
        ws.dataset = docs_slice(Params(), args.max_passages, 13)
        ws.notes.append(
            f"a fixed {len(ws.dataset.corpus)}-passage slice of the Python docs (default data settings, seed 13, "
            f"max_passages={args.max_passages}); --use-data for the pipeline's data/"
        )
    ds = ws.dataset
    queries = ds.queries[args.split]
    qrels = ds.qrels[args.split]
    qids = list(queries)
    docids = sorted(ds.corpus)
    texts = [p.student.passage_prefix + passage_text(ds.corpus[d]) for d in docids]
    qtexts = [p.student.query_prefix + queries[q] for q in qids]
    log.info("%d %s queries over %d passages; student %s", len(qids), args.split, len(docids), ws.student_dir)

    corpus_emb: dict[str, np.ndarray] = {}
    query_emb: dict[str, np.ndarray] = {}
    encode_s: dict[str, float] = {}
    for b in backends:
        backend, recipe = parse_variant(b)
        model = load_student(ws.student_dir, backend, p.student.max_seq_length, recipe=recipe)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        corpus_emb[b] = encode(model, texts, batch_size=p.student.batch_size)
        encode_s[b] = round(time.perf_counter() - t0, 1)
        query_emb[b] = encode(model, qtexts, batch_size=p.student.batch_size)
        log.info("%-9s corpus encoded in %.1f s", b, encode_s[b])
        del model

    def run_of(c: np.ndarray, q: np.ndarray) -> dict[str, dict[str, float]]:
        return search.to_run(qids, search.search(search.exact_index(c), q, docids, 100))

    runs = {b: run_of(corpus_emb[b], query_emb[b]) for b in backends}
    ref = evaluate(qrels, runs["torch"])
    ref_pq = per_query(qrels, runs["torch"])["nDCG@10"]
    out: dict[str, Any] = {}
    for b in backends:
        table = evaluate(qrels, runs[b])
        entry: dict[str, Any] = {"metrics": {k: round(v, 5) for k, v in table.items()}, "corpus_encode_s": encode_s[b]}
        if b != "torch":
            pq_b = per_query(qrels, runs[b])["nDCG@10"]
            mixed = evaluate(qrels, run_of(corpus_emb["torch"], query_emb[b]))
            cos_c = np.einsum("ij,ij->i", corpus_emb["torch"], corpus_emb[b])
            cos_q = np.einsum("ij,ij->i", query_emb["torch"], query_emb[b])
            overlap = [
                len(set(_top(runs[b][q], 10)) & set(_top(runs["torch"][q], 10))) / 10 for q in qids if runs["torch"][q]
            ]
            diffs = np.array([pq_b[q] - ref_pq[q] for q in qids])
            se = float(diffs.std(ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else float("nan")
            entry.update(
                {
                    "ndcg10_delta_vs_torch": round(table["nDCG@10"] - ref["nDCG@10"], 5),
                    "ndcg10_delta_95ci": [
                        round(float(diffs.mean()) - 1.96 * se, 5),
                        round(float(diffs.mean()) + 1.96 * se, 5),
                    ],
                    "ndcg10_delta_torch_corpus": round(mixed["nDCG@10"] - ref["nDCG@10"], 5),
                    "paired_vs_torch": paired_test(pq_b, ref_pq),
                    "cosine_to_torch": {
                        "passages_mean": round(float(cos_c.mean()), 5),
                        "passages_min": round(float(cos_c.min()), 5),
                        "queries_mean": round(float(cos_q.mean()), 5),
                        "queries_min": round(float(cos_q.min()), 5),
                    },
                    "top10_overlap_with_torch": round(float(np.mean(overlap)), 4) if overlap else None,
                    "loss_within_bar": ref["nDCG@10"] - table["nDCG@10"] <= MAX_LOSS,
                }
            )
        out[b] = entry
    result = {
        "meta": {
            "caveat": CAVEAT,
            "machine": machine_info(),
            "threads": threads.__dict__,
            "student": str(ws.student_dir),
            "student_trained": ws.student_is_trained,
            "max_seq_length": p.student.max_seq_length,
            "queries": len(qids),
            "split": args.split,
            "passages": len(docids),
            "data": ds.meta.get("source", ""),
            "notes": ws.notes,
            "max_loss": MAX_LOSS,
            "wall_s": round(time.perf_counter() - started, 1),
        },
        "backends": out,
    }
    md = markdown(result)
    write_results("quality", result, md, args.out)
    print(md)
    return 0


def _top(run: dict[str, float], k: int) -> list[str]:
    return [d for d, _ in sorted(run.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def markdown(r: dict[str, Any]) -> str:
    m = r["meta"]
    lines = [
        "# Retrieval quality per student backend (exact flat search)",
        "",
        f"{m['queries']} {m['split']} queries over {m['passages']} passages ({m['data']}); student `{m['student']}` "
        f"({'trained' if m['student_trained'] else 'UNTRAINED fallback'}), max_seq_length {m['max_seq_length']}.",
        "",
    ]
    if m["notes"]:
        lines += ["Notes:", *[f"- {n}" for n in m["notes"]], ""]
    lines += [
        "| backend | nDCG@10 | MRR@10 | Recall@100 | ΔnDCG@10 vs torch | 95% CI | Δ (torch corpus) | top-10 overlap "
        "| cos passages mean/min | paired t p | loss <= 0.005 |",
        "|---|---:|---:|---:|---:|---|---:|---:|---|---:|---|",
    ]
    for b, e in r["backends"].items():
        mt = e["metrics"]
        if b == "torch":
            lines.append(
                f"| {b} | {mt['nDCG@10']:.4f} | {mt['MRR@10']:.4f} | {mt['Recall@100']:.4f} | – | – | – | – | – | – | – |"
            )
            continue
        c = e["cosine_to_torch"]
        lines.append(
            f"| {b} | {mt['nDCG@10']:.4f} | {mt['MRR@10']:.4f} | {mt['Recall@100']:.4f} | "
            f"{e['ndcg10_delta_vs_torch']:+.4f} | [{e['ndcg10_delta_95ci'][0]:+.4f}, {e['ndcg10_delta_95ci'][1]:+.4f}] | "
            f"{e['ndcg10_delta_torch_corpus']:+.4f} | "
            f"{fmt(e['top10_overlap_with_torch'] or float('nan'), 3)} | {c['passages_mean']:.4f} / {c['passages_min']:.4f} | "
            f"{e['paired_vs_torch']['t_pvalue']:.3g} | {'yes' if e['loss_within_bar'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
