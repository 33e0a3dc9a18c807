"""IVF-PQ vs HNSW (vs exact) on the default corpus: Recall@100 against exact search, nDCG@10, p50, bytes/vector.

    python -m bench.index_compare [--data data] [--nprobe 1,4,8,16,32,64] [--m 24,48,96]

Encodes `data/corpus.jsonl` with the packaged MiniLM (the untrained student) through `kd.compute`
(shards kept under `.cache/bench/index_compare/`, so a re-run or a killed run skips the encode),
builds each index from `conf/index/` plus a small IVF-PQ sweep, and times one query per search call
on one FAISS thread (what the service does). Writes bench/results/index_compare.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import yaml

from bench.common import machine_info, median, write_results
from kd import compute
from kd.config import ComputeConfig, IndexConfig, ModelConfig
from kd.data.io import passage_text, read_corpus, read_qrels, read_queries
from kd.paths import cache_dir
from kd.retrieval import index as kdindex
from kd.retrieval import search as kd_search
from kd.retrieval.metrics import evaluate

CONF = Path(__file__).resolve().parent.parent / "conf" / "index"
DEPTH = 100


def conf(name: str) -> IndexConfig:
    return IndexConfig(**yaml.safe_load((CONF / f"{name}.yaml").read_text()))


def measure(
    index: faiss.Index, q: np.ndarray, docids: list[str], exact: list[set[str]], qids: list[str], qrels: Any
) -> dict[str, float]:
    hits = kd_search.search(index, q, docids, DEPTH)
    recall = float(np.mean([len({d for d, _ in h} & e) / len(e) for h, e in zip(hits, exact)]))
    quality = evaluate(qrels, kd_search.to_run(qids, hits))
    times = []
    for row in q:  # one query per call, as /search does
        t = time.perf_counter()
        kd_search.search_rows(index, row[None, :], DEPTH)
        times.append((time.perf_counter() - t) * 1000)
    return {
        "recall@100_vs_exact": recall,
        "nDCG@10": quality["nDCG@10"],
        "Recall@100": quality["Recall@100"],
        "p50_ms": median(times),
        "p99_ms": float(np.percentile(times, 99)),
        "bytes_per_vector": kdindex.bytes_per_vector(index),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data"))
    ap.add_argument("--nprobe", default="1,4,8,16,32,64")
    ap.add_argument("--m", default="24,48,96")
    args = ap.parse_args()

    corpus = read_corpus(args.data / "corpus.jsonl")  # only what the comparison needs (not every split)
    queries = read_queries(args.data / "queries" / "test.jsonl")
    qrels = read_qrels(args.data / "qrels" / "test.tsv", corpus)
    docids = sorted(corpus)
    texts = [passage_text(corpus[d]) for d in docids]
    spec = compute.ModelSpec.student(ModelConfig())
    chunk_dir = cache_dir() / "bench" / "index_compare" / compute.fingerprint(texts, spec)
    t0 = time.perf_counter()
    emb = compute.encode_texts(texts, spec, ComputeConfig(batch_size=512), chunk_dir)
    encode_s = time.perf_counter() - t0
    qids = sorted(qrels)
    q = compute.encode_texts(
        [queries[x] for x in qids], compute.ModelSpec.student(ModelConfig(), text="query"), ComputeConfig()
    )
    faiss.omp_set_num_threads(1)

    flat = kdindex.build(emb, IndexConfig(type="flat"))
    exact = [{d for d, _ in h} for h in kd_search.search(flat, q, docids, DEPTH)]
    rows: list[dict[str, Any]] = []

    def add(name: str, cfg: IndexConfig) -> None:
        t = time.perf_counter()
        index = kdindex.build(emb, cfg)
        build_s = time.perf_counter() - t
        keys = ("M", "ef_search") if cfg.type == "hnsw" else ("nlist", "m", "nbits", "nprobe")
        rows.append({"index": name, "type": cfg.type, "params": {k: getattr(cfg, k) for k in keys},
                     "build_s": build_s, **measure(index, q, docids, exact, qids, qrels)})  # fmt: skip
        print(rows[-1], flush=True)

    add("flat (exact)", IndexConfig(type="flat"))
    add("hnsw (conf/index/hnsw.yaml)", conf("hnsw"))
    ivf = conf("ivfpq")
    add("ivfpq (conf/index/ivfpq.yaml)", ivf)
    for nprobe in map(int, args.nprobe.split(",")):
        if nprobe != ivf.nprobe and nprobe <= ivf.nlist:
            add(f"ivfpq nprobe={nprobe}", dataclasses.replace(ivf, nprobe=nprobe))
    for m in map(int, args.m.split(",")):
        if m != ivf.m and emb.shape[1] % m == 0:
            add(f"ivfpq m={m}", dataclasses.replace(ivf, m=m))

    data = {"machine": machine_info(), "passages": len(docids), "dim": int(emb.shape[1]), "test_queries": len(qids),
            "encoder": "minilm (packaged, untrained), torch float32", "encode_s": encode_s,
            "search": "one query per call, 1 FAISS thread, k=100", "rows": rows}  # fmt: skip
    lines = [
        f"# Index comparison: {len(docids)} passages, {len(qids)} test queries, MiniLM (untrained) embeddings\n",
        "Recall@100 vs exact = overlap of each index's top-100 with exact search's; nDCG@10 and Recall@100 on the",
        "test qrels; search timed one query per call on 1 FAISS thread; bytes/vector = serialised index / passages.\n",
        "| index | params | Recall@100 vs exact | nDCG@10 | Recall@100 (qrels) | p50 ms | p99 ms | bytes/vector | build s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
        lines.append(
            f"| {r['index']} | {params} | {r['recall@100_vs_exact']:.4f} | {r['nDCG@10']:.4f} | {r['Recall@100']:.4f} "
            f"| {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['bytes_per_vector']:.0f} | {r['build_s']:.1f} |"
        )
    js, md = write_results("index_compare", data, "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {js} and {md}")


if __name__ == "__main__":
    main()
