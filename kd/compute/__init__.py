"""Where bulk model passes run: in this process (`compute=local`) or on a Ray Data actor pool (`compute=ray`).

One small interface for the stages:

    encode_texts(texts, spec, compute_cfg, chunk_dir) -> float32 [N, D]   (a bi-encoder's normalised embeddings)
    score_pairs(queries, passages, spec, compute_cfg, chunk_dir) -> float32 [N]   (a teacher's pair scores)

Both sort the inputs by length (so each batch pads little), cut them into shards of `compute.batch_size`,
and keep every finished shard as `<chunk_dir>/part-<i>.npy`, written atomically: a killed run resumes
from its finished shards and never takes a half-written one as complete. The local and the Ray path cut
and write the same shards, so either resumes the other's run and their results agree to float tolerance.

With Ray, each shard is one row of a Ray Data dataset mapped by `map_batches` over a callable class
that loads the model once per actor (`compute.actors` actors of `cpus_per_actor`/`gpus_per_actor`);
the driver writes each shard as soon as it streams back, so only the driver needs the chunk folder.
Ray is imported only on that path (`pip install -e ".[ray]"`).

The parts: `spec` (ModelSpec, checks, pass records), `shards` (the worker and the kept shards),
`ray_pool` (Ray), `passes` (the interface below, re-exported here so callers write `compute.encode_texts`).
"""

from kd.compute.passes import PairScorer, encode_texts, fingerprint, run_sharded, score_pairs
from kd.compute.ray_pool import init_ray, plan_actors, root_message
from kd.compute.shards import ShardRunner
from kd.compute.spec import ROLES, ComputeError, ModelSpec, changed_fields, check, kernel_path, pass_record

__all__ = [
    "ROLES", "ComputeError", "ModelSpec", "PairScorer", "ShardRunner", "changed_fields", "check", "encode_texts",
    "fingerprint", "init_ray", "kernel_path", "pass_record", "plan_actors", "root_message", "run_sharded",
    "score_pairs",
]  # fmt: skip
