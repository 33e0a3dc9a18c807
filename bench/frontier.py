"""The speed/quality frontier: student families x serving modes, untrained and distilled, per corpus.

    python -m bench.frontier                                   # every point, seeds 13 1 2, the three docs corpora
    python -m bench.frontier --only static_asym --data python_docs_faq --seeds 13
    python -m bench.frontier --costs                           # only the cost table (latency, passages/s, size)
    python -m bench.frontier --report                          # frontier.md + the plot's CSV from what was run

Quality: each (point, corpus, seed) is a `dvc exp run` of the shipped pipeline with the point's overrides;
one row per split goes to bench/results/frontier.csv: nDCG@10 of BM25, the untrained student (its own
starting point in the same mode), the distilled student and the teacher alone, and the paired t-test of
distilled vs untrained. Dev chooses (docs/frontier.md states the rule); test only reports.

Cost (measured once per student on this machine, bench/results/frontier_costs.csv): query-encode time for
one query through the path the service runs (`kd.retrieval.search.query_encoder`, the student's serving backend, at
`service.threads`), corpus-encode passages/s of whatever encodes the corpus in that mode (the student, or
the teacher's pass for `index.passages=teacher`), parameters, and FLOPs per token relative to the teacher.
`dvc plots show` draws nDCG@10 against query latency (dvc.yaml, "frontier").
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import append_rows, cpu_label, dvc_exp_run

OUT = Path("bench/results/frontier.csv")
COSTS = Path("bench/results/frontier_costs.csv")  # the machine the quality runs used: the decision reads these
# The same table measured on other machines, one folder each under bench/results/ (named by the CPU): reported, chooses nothing.
OTHER_COSTS = "*/frontier_costs.csv"
PLOT = Path("bench/results/frontier_plot.csv")
REPORT = Path("bench/results/frontier.md")
FIELDS = ["point", "student", "mode", "data", "seed", "split", "queries", "bm25", "untrained", "kd", "teacher",
          "kd_over_teacher", "untrained_over_teacher", "kd_vs_untrained_p", "kd_minus_untrained", "cpu", "wall_s",
          "overrides"]  # fmt: skip
COST_FIELDS = ["student", "mode", "backend", "query_p50_ms", "query_p90_ms", "corpus_passages_per_s", "corpus_encoder",
               "params_m", "flops_per_token_vs_teacher", "threads", "cpu"]  # fmt: skip
DATA = ("python_docs_faq", "django_docs_faq", "sqlalchemy_docs_faq")

# The recipe every new family trains with, fixed before any of its runs (docs/frontier.md): spans cropped
# from passages as extra queries labelled by the teacher, and the embedding term toward the teacher's space.
NEW_FAMILY = ["mining.pseudo_queries=2000", "loss.embed=1.0", "train.epochs=3", "train.interpolate=1.0",
              "train.interpolate_grid=[0.5]"]  # fmt: skip
# A static table also learns the teacher's embedding of every unjudged corpus passage first: adopted by the
# rule written before its pilot (docs/frontier.md; static_asym, CPython dev, seeds 13 and 1: 0.2451 -> 0.3428
# and 0.2426 -> 0.3543, bench/results/frontier_pilot_corpus.csv). Not given to mpnet_l4_asym: a corpus epoch
# of a 4-layer transformer takes about an hour on one AVX2 core (estimated from its forward rate), against seconds for a table.
STATIC = [*NEW_FAMILY, "train.corpus_epochs=2"]
POINTS: dict[str, list[str]] = {
    "minilm_sym": ["student=minilm", "index.passages=student"],  # the former default, as committed
    "minilm_l3_sym": ["student=minilm_l3", "index.passages=student", *NEW_FAMILY],
    "static_sym": ["student=static", "index.passages=student", *STATIC],
    "static_asym": ["student=static", "index.passages=teacher", *STATIC],
    "mpnet_l4_asym": ["student=mpnet_l4", "index.passages=teacher", *NEW_FAMILY],
    "mpnet_l4_sym": ["student=mpnet_l4", "index.passages=student", *NEW_FAMILY],
}


def _value(overrides: list[str], key: str, default: str) -> str:
    return next((o.split("=", 1)[1] for o in reversed(overrides) if o.startswith(f"{key}=")), default)


def run_point(point: str, data: str, seed: int, extra: list[str]) -> list[dict[str, Any]]:
    """One `dvc exp run` of the pipeline; its metrics.json as one row per split."""
    overrides = [*POINTS[point], f"data={data}", f"train.seed={seed}", *extra]
    started = time.perf_counter()
    tag = (
        hashlib.sha1(" ".join(extra).encode()).hexdigest()[:6] if extra else "base"
    )  # --set runs get names of their own
    dvc_exp_run(f"fr-{point}-{data.split('_')[0]}-s{seed}-{tag}", overrides)
    wall = round(time.perf_counter() - started, 1)
    m = json.loads(Path("metrics.json").read_text())
    rows = []
    for split in ("dev", "test"):
        table, sig = m[split]["table"], m[split]["kd_vs_untrained_ndcg@10"]
        nd = {k: table[k]["nDCG@10"] for k in ("bm25", "untrained", "kd", "teacher") if k in table}
        t = nd.get("teacher", math.nan)
        rows.append({
            "point": point, "student": _value(overrides, "student", "minilm"),
            "mode": "asymmetric" if _value(overrides, "index.passages", "student") == "teacher" else "symmetric",
            "data": data, "seed": seed, "split": split, "queries": m["queries"][split],
            **{k: round(v, 4) for k, v in nd.items()},
            "kd_over_teacher": round(nd["kd"] / t, 4), "untrained_over_teacher": round(nd["untrained"] / t, 4),
            "kd_vs_untrained_p": float(f"{sig['t_pvalue']:.3g}"), "kd_minus_untrained": round(sig["mean_diff"], 4),
            "cpu": cpu_label(), "wall_s": wall, "overrides": " ".join(overrides),
        })  # fmt: skip
    return rows


# ---------------------------------------------------------------- costs


def flops_per_token(model: Any) -> float:
    """Multiply-adds x 2 per input token of the encoder, excluding attention's length-dependent part.

    A transformer spends ~2 FLOPs per weight per token outside the embedding lookup (and the unused
    pooler head); a static model adds one table row per token (its width) and nothing else.
    """
    first = model[0]
    hf = getattr(first, "auto_model", None)
    if hf is None:  # StaticEmbedding: a lookup and a running sum
        return float(first.get_embedding_dimension() if hasattr(first, "get_embedding_dimension") else 0)
    return 2.0 * sum(p.numel() for n, p in hf.named_parameters() if not n.startswith(("embeddings", "pooler")))


def measure_costs(points: list[str], threads: int, n_passages: int = 256) -> list[dict[str, Any]]:
    """Query latency and corpus throughput of each point's student (and the teacher), on this machine."""
    from kd.compose import compose
    from kd.data.io import passage_text, read_dataset
    from kd.models.backends import load_student, query_encode_ms
    from kd.models.loading import encode
    from kd.models.runtime import available_cores, configure_threads
    from kd.models.store import resolve
    from kd.models.student_families import initial_student
    from kd.models.teacher import BiEncoderTeacher, load_teacher
    from kd.params import params_from_dict
    from kd.retrieval.search import query_encoder

    ds = read_dataset(Path("data"))
    queries = [q for split in ("dev", "test") for q in ds.queries[split].values()][:100]
    docids = sorted(ds.corpus)
    rng = np.random.default_rng(13)
    passages = [passage_text(ds.corpus[docids[i]]) for i in rng.choice(len(docids), n_passages, replace=False)]
    base = params_from_dict(compose())
    rows: list[dict[str, Any]] = []
    cpu = cpu_label()

    def corpus_rate(model: Any, batch: int, dtype: str) -> float:
        configure_threads(available_cores())  # bulk passes use every core
        encode(model, passages[:batch], batch_size=batch, dtype=dtype)  # warm-up
        t0 = time.perf_counter()
        encode(model, passages, batch_size=batch, dtype=dtype)
        return n_passages / (time.perf_counter() - t0)

    teacher = load_teacher(base.teacher)
    assert isinstance(teacher, BiEncoderTeacher)
    t_model = teacher.model
    t_flops = flops_per_token(t_model)
    t_rate = corpus_rate(t_model, base.teacher.batch_size, base.teacher.dtype)
    configure_threads(threads)
    t_lat = query_encode_ms(teacher.encode_queries, queries)
    rows.append({"student": "teacher", "mode": "", "backend": "torch", "query_p50_ms": round(t_lat["p50_ms"], 3),
                 "query_p90_ms": round(t_lat["p90_ms"], 3), "corpus_passages_per_s": round(t_rate, 1),
                 "corpus_encoder": "teacher", "params_m": round(sum(p.numel() for p in t_model.parameters()) / 1e6, 1),
                 "flops_per_token_vs_teacher": 1.0, "threads": threads, "cpu": cpu})  # fmt: skip
    # the teacher on the ONNX path too, so a transformer student served with ONNX meets it on the same backend
    t_onnx = load_student(resolve(base.teacher.model), "onnx", base.teacher.max_seq_length, threads=threads)
    configure_threads(threads)
    t_lat = query_encode_ms(query_encoder(t_onnx, base.teacher.query_prefix), queries)
    rows.append({**rows[0], "backend": "onnx", "query_p50_ms": round(t_lat["p50_ms"], 3),
                 "query_p90_ms": round(t_lat["p90_ms"], 3)})  # fmt: skip
    seen: dict[str, tuple[dict[str, float], float, float, float, str]] = {}
    for point in points:
        p = params_from_dict(compose(POINTS[point]))
        s = p.student
        if s.name not in seen:
            path = initial_student(s)
            torch_model = load_student(path, "torch", s.max_seq_length)
            rate = corpus_rate(torch_model, s.batch_size, s.dtype)
            served = load_student(path, s.backend, s.max_seq_length, threads=threads)
            configure_threads(threads)
            lat = query_encode_ms(query_encoder(served, s.query_prefix), queries)
            params = sum(x.numel() for x in torch_model.parameters()) / 1e6
            seen[s.name] = (lat, rate, params, flops_per_token(torch_model) / t_flops, s.backend)
        lat, rate, params, flops, backend = seen[s.name]
        asym = p.index.passages == "teacher"
        rows.append({"student": s.name, "mode": "asymmetric" if asym else "symmetric", "backend": backend,
                     "query_p50_ms": round(lat["p50_ms"], 3), "query_p90_ms": round(lat["p90_ms"], 3),
                     "corpus_passages_per_s": round(t_rate if asym else rate, 1),
                     "corpus_encoder": "teacher" if asym else "student", "params_m": round(params, 1),
                     "flops_per_token_vs_teacher": float(f"{flops:.3g}"), "threads": threads, "cpu": cpu})  # fmt: skip
    return rows


# ---------------------------------------------------------------- report


def _read(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


# The pooled dev evidence of docs/frontier.md: every dev question of CPython dev, Django (both splits: a corpus
# choices were made on) and SQLAlchemy dev, over seeds 13, 1, 2.
DEV_PARTS = (
    ("python_docs_faq", "dev"),
    ("django_docs_faq", "dev"),
    ("django_docs_faq", "test"),
    ("sqlalchemy_docs_faq", "dev"),
)
RULE_SEEDS = ("13", "1", "2")
FORMER_DEFAULT = "minilm_sym"


def pooled(rows: list[dict[str, str]], key: str) -> float | None:
    """Mean over seeds of the question-weighted mean of `key` over DEV_PARTS; None if any part or seed is missing."""
    by = {(r["data"], r["split"], str(r["seed"])): r for r in rows}
    per_seed = []
    for seed in RULE_SEEDS:
        parts = [by.get((d, sp, seed)) for d, sp in DEV_PARTS]
        if any(r is None for r in parts):
            return None
        n = sum(int(r["queries"]) for r in parts if r)
        per_seed.append(sum(int(r["queries"]) * float(r[key]) for r in parts if r) / n)
    return float(np.mean(per_seed))


def decide(rows: list[dict[str, str]], costs: list[dict[str, str]]) -> tuple[str, list[dict[str, Any]]]:
    """The default by the rule written before the runs (docs/frontier.md), and each point's standing.

    1. Eligible: query p50 at least 3x lower than the teacher's (same backend, from the cost table),
       pooled dev KD above its own untrained start, and every dev part on all three seeds (rule 4).
    2. The fastest eligible point whose pooled dev KD is >= 0.97 x the teacher's.
    3. Else the eligible point with the highest ratio; within 0.005 of it, the faster one.
    No eligible point: the former default stays.
    """
    teacher = {c["backend"]: float(c["query_p50_ms"]) for c in costs if c["student"] == "teacher"}
    cost = {(c["student"], c["mode"]): c for c in costs if c["student"] != "teacher"}
    by_point: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        by_point[r["point"]].append(r)
    table = []
    for point, rs in sorted(by_point.items()):
        c = cost.get((rs[0]["student"], rs[0]["mode"]))
        p50 = float(c["query_p50_ms"]) if c else math.nan
        cheaper = teacher.get(c["backend"], math.nan) / p50 if c else math.nan
        kd, un, te = pooled(rs, "kd"), pooled(rs, "untrained"), pooled(rs, "teacher")
        ratio = kd / te if kd is not None and te else math.nan
        why = []
        if kd is None:
            why.append("not every dev part on seeds 13, 1, 2")
        if not cheaper >= 3:
            why.append(f"query only {cheaper:.2g}x cheaper than the teacher" if c else "no cost measured")
        if kd is not None and un is not None and kd <= un:
            why.append("pooled dev KD not above its untrained start")
        table.append({"point": point, "pooled_kd": kd, "pooled_untrained": un, "pooled_teacher": te, "ratio": ratio,
                      "query_p50_ms": p50, "x_cheaper": cheaper, "eligible": not why, "why_not": "; ".join(why)})  # fmt: skip
    eligible = [t for t in table if t["eligible"]]
    near = [t for t in eligible if t["ratio"] >= 0.97]
    if near:
        return min(near, key=lambda t: t["query_p50_ms"])["point"], table
    if eligible:
        best = max(t["ratio"] for t in eligible)
        return min((t for t in eligible if t["ratio"] >= best - 0.005), key=lambda t: t["query_p50_ms"])["point"], table
    return FORMER_DEFAULT, table


def cost_table(costs: list[dict[str, str]]) -> str:
    """Markdown of a cost CSV, each query p50 also as a multiple of the teacher's on the same backend."""
    teacher = {c["backend"]: float(c["query_p50_ms"]) for c in costs if c["student"] == "teacher"}
    md = ["| student | mode | backend | query p50 ms | x cheaper than the teacher (same backend) | corpus passages/s | "
          "params (M) | FLOPs/token vs teacher |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for c in costs:
        x = teacher.get(c["backend"], math.nan) / float(c["query_p50_ms"])
        md.append(f"| {c['student']} | {c['mode'] or '-'} | {c['backend']} | {c['query_p50_ms']} | {x:.3g} | "
                  f"{c['corpus_passages_per_s']} ({c['corpus_encoder']}) | {c['params_m']} | {c['flops_per_token_vs_teacher']} |")  # fmt: skip
    return "\n".join(md)


def rule_table(rows: list[dict[str, str]], costs: list[dict[str, str]]) -> str:
    """Markdown of `decide` on these quality rows and this cost table: each point's standing and the default."""
    choice, standing = decide(rows, costs)
    md = ["| point | pooled dev KD | its untrained | teacher | KD / teacher | query p50 ms | x cheaper | eligible |",
          "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for t in standing:
        md.append(f"| {t['point']} | {_fmt(t['pooled_kd'], '.4f')} | {_fmt(t['pooled_untrained'], '.4f')} | "
                  f"{_fmt(t['pooled_teacher'], '.4f')} | {_fmt(t['ratio'], '.3f')} | {_fmt(t['query_p50_ms'])} | "
                  f"{_fmt(t['x_cheaper'])} | {'yes' if t['eligible'] else 'no: ' + t['why_not']} |")  # fmt: skip
    md.append(f"\nDefault by the rule: **{choice}**.")
    return "\n".join(md)


def _fmt(value: float | None, spec: str = ".3g") -> str:
    """`value` in `spec`, or "-" where it was not measured (None or NaN)."""
    return "-" if value is None or math.isnan(value) else format(value, spec)


def report() -> str:
    """frontier.md (means and spreads over seeds, per corpus and split) and the plot's CSV."""
    from kd.atomic import atomic_path, write_text

    rows, costs = _read(OUT), _read(COSTS)
    cost = {(c["student"], c["mode"]): c for c in costs if c["student"] != "teacher"}
    teacher_by_backend = {c["backend"]: c for c in costs if c["student"] == "teacher"}
    teacher_cost = teacher_by_backend.get("torch")
    groups: dict[tuple[str, str, str], list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        groups[(r["point"], r["data"], r["split"])].append(r)
    md = ["| point | corpus | split | seeds | untrained | distilled (min-max) | teacher | distilled / teacher | "
          "KD vs untrained p (max over seeds) | query p50 ms | x cheaper per query than the teacher (same backend) |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    plot = []
    for (point, data, split), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        kd = [float(r["kd"]) for r in rs]
        un = float(np.mean([float(r["untrained"]) for r in rs]))
        te = float(np.mean([float(r["teacher"]) for r in rs]))
        c = cost.get((rs[0]["student"], rs[0]["mode"]))
        p50 = float(c["query_p50_ms"]) if c else math.nan
        same = teacher_by_backend.get(c["backend"]) if c else None  # the teacher on the student's backend
        speed = float(same["query_p50_ms"]) / p50 if c and same else math.nan
        md.append(f"| {point} | {data} | {split} | {len(rs)} | {un:.4f} | {np.mean(kd):.4f} ({min(kd):.4f}-{max(kd):.4f}) | "
                  f"{te:.4f} | {np.mean(kd) / te:.1%} | {max(float(r['kd_vs_untrained_p']) for r in rs):.2g} | "
                  f"{_fmt(p50)} | {_fmt(speed)} |")  # fmt: skip
        if c:
            plot.append({"system": f"{point} ({data}, {split})", "query_p50_ms": p50, "ndcg@10": round(float(np.mean(kd)), 4),
                         "split": split, "data": data})  # fmt: skip
            plot.append({"system": f"{point} untrained ({data}, {split})", "query_p50_ms": p50, "ndcg@10": round(float(un), 4),
                         "split": split, "data": data})  # fmt: skip
    if teacher_cost:
        # one teacher point per corpus and split whatever order the rows were appended in: a float32 row's
        # score (the arithmetic the cost table's teacher ran) over a bf16 row's
        float32_last = sorted(rows, key=lambda r: r["cpu"] == "no-bf16")
        for (data, split), te in {(r["data"], r["split"]): float(r["teacher"]) for r in float32_last}.items():
            plot.append({"system": f"teacher ({data}, {split})", "query_p50_ms": float(teacher_cost["query_p50_ms"]),
                         "ndcg@10": te, "split": split, "data": data})  # fmt: skip
    cpus = sorted({r["cpu"] for r in rows} | {c["cpu"] for c in costs})
    text = ("# Frontier\n\nGenerated by `python -m bench.frontier --report` from frontier.csv and frontier_costs.csv "
            f"(CPU kinds: {', '.join(cpus) or '-'}; `no-bf16` = float32 arithmetic).\n\n## Quality (nDCG@10)\n\n"
            + "\n".join(md) + "\n\n## The decision rule on pooled dev (docs/frontier.md)\n\n" + rule_table(rows, costs)
            + "\n\n## Cost\n\n" + cost_table(costs) + "\n")  # fmt: skip
    for other in sorted(COSTS.parent.glob(OTHER_COSTS)):
        other_costs = _read(other)
        text += (f"\n## Cost on `{other.parent.name}`\n\n{cost_table(other_costs)}\n\n"
                 f"The decision rule with these costs (the same quality rows):\n\n{rule_table(rows, other_costs)}\n")  # fmt: skip
    write_text(REPORT, text)
    with atomic_path(PLOT) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["system", "query_p50_ms", "ndcg@10", "split", "data"])
        writer.writeheader()
        writer.writerows(plot)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=sorted(POINTS), default=list(POINTS))
    ap.add_argument("--data", nargs="+", choices=DATA, default=list(DATA))
    ap.add_argument("--seeds", type=int, nargs="+", default=[13, 1, 2])
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="overrides added to every run")
    ap.add_argument("--costs", action="store_true", help="measure the cost table only (no training runs)")
    ap.add_argument("--threads", type=int, default=1, help="query-encode threads (service.threads)")
    ap.add_argument("--costs-out", type=Path, default=COSTS, help="cost CSV to write (another machine: bench/results/<cpu>/frontier_costs.csv)")
    ap.add_argument("--report", action="store_true", help="only rewrite frontier.md and the plot CSV")
    ap.add_argument("--out", type=Path, default=OUT, help="CSV the quality rows go to (e.g. a pilot's own file)")
    args = ap.parse_args()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    if args.costs:
        rows = measure_costs(args.only, args.threads)
        args.costs_out.unlink(missing_ok=True)
        append_rows(args.costs_out, COST_FIELDS, rows)
        for r in rows:
            print(r, flush=True)
    elif not args.report:
        for data in args.data:
            for seed in args.seeds:  # seed-major within a corpus: an interrupted sweep compares points on equal seeds
                for point in args.only:
                    rows = run_point(point, data, seed, args.set)
                    append_rows(args.out, FIELDS, rows)
                    print(rows, flush=True)
    print(report())


if __name__ == "__main__":
    main()
