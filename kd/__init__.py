"""kd: the library behind the pipeline, the service and the benchmarks.

Knowledge distillation for retrieval: a teacher (bi- or cross-encoder) scores hard-negative groups, a
small bi-encoder student learns those scores (`kd.losses`, `kd.train`), and the student is indexed
(`kd.index`) and evaluated (`kd.evaluation`). `stages/` calls it step by step; `service/` serves its
outputs. Start at `kd.config` (every parameter) and `docs/configuration.md`.
"""
