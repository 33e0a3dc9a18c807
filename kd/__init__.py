"""kd: the library behind the pipeline, the service and the benchmarks.

Knowledge distillation for retrieval: a teacher (bi- or cross-encoder) scores hard-negative groups, a
small bi-encoder student learns those scores, and the student is indexed and evaluated. `stages/` calls it
step by step; `service/` serves its outputs. Start at `kd.config` (every parameter) and
`docs/configuration.md`. The subpackages, in the order they import each other:

    kd/data/       one module per source -> the canonical corpus/queries/qrels format (`kd.data.io`)
    kd/models/     model store, loading (bi, cross, cut, static), backends (torch, ONNX, int8), runtime
                   (CPU flags, dtype, threads), the teacher, its cache and its passage matrix
    kd/compute/    where bulk model passes run (this process, or a Ray actor pool), sharded and resumable
    kd/retrieval/  BM25, the FAISS index, the encode/search/score/rerank core, metrics, evaluation
    kd/distill/    hard negatives, pseudo-queries, losses, training, corpus embedding distillation

At the top, under all of them: `config` (the typed schema), `params` (params.yaml read and checked), `artifacts` (every artifact path),
`tracking` (MLflow), and plumbing (`atomic`, `cli`, `errors`, `paths`, `compose`). `kd` imports neither
`stages/` nor `service/`.
"""
