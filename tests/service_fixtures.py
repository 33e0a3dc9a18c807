"""A tiny but real artifact set for the service tests (and a quick bench run).

`build_artifacts(dir)` writes what the `train` and `index` stages would: a sentence-transformers
student folder and an index folder, plus the dataset (`dir/data`, canonical format) the judged
test reads and a `params.yaml` the CLI can be pointed at. Swap it for the smoke pipeline's outputs
when those exist; the tests only depend on the returned paths and params.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import yaml

from kd import index as kd_index
from kd.config import IndexConfig, ModelConfig, Params, ServiceConfig
from kd.data.io import passage_text, read_dataset, write_dataset
from kd.data.python_docs_faq import build, fetch_debian_docs
from kd.models import encode, load_bi_encoder

REPO = Path(__file__).resolve().parent.parent
DEBIAN_CACHE = REPO / ".cache" / "debian"
DOC_PACKAGE = "python3.11-doc"

TINY_PARAMS = Params(
    teacher=ModelConfig(name="minilm", model="minilm", kind="bi_encoder", max_seq_length=64),
    # student reads 128 tokens, the teacher 64: their scores differ, so a test can tell who scored
    student=ModelConfig(name="minilm-student", model="minilm", max_seq_length=128),
    index=IndexConfig(type="hnsw", M=16, ef_construction=40, ef_search=32),
    service=ServiceConfig(rerank=True),
)


def docs_available() -> bool:
    """The corpus comes from the Debian python docs package: cached, or fetchable with apt-get."""
    return (DEBIAN_CACHE / DOC_PACKAGE / ".version").exists() or (
        shutil.which("apt-get") is not None and shutil.which("dpkg-deb") is not None
    )


def build_artifacts(out: Path, params: Params = TINY_PARAMS) -> tuple[Path, Path, Params]:
    """Student + HNSW index over ~60 real passages; returns (student_dir, index_dir, params)."""
    out.mkdir(parents=True, exist_ok=True)
    sources, version = fetch_debian_docs(DOC_PACKAGE, DEBIAN_CACHE)
    ds = build(
        sources,
        f"debian:{version}",
        max_passages=60,
        max_test_queries=5,
        max_train_queries=5,
        max_val_queries=2,
    )
    write_dataset(ds, out / "data")

    student_dir = out / "student"
    model = load_bi_encoder(params.student.model, params.student.max_seq_length)
    model.save(str(student_dir))

    docids = sorted(ds.corpus)
    emb = encode(model, [passage_text(ds.corpus[d]) for d in docids], params.student.passage_prefix)
    index = kd_index.build(emb, params.index)
    meta = {
        "student": params.student.name,
        "index": dataclasses.asdict(params.index),
        "corpus_size": len(docids),
        "git_commit": "test-commit",
        "dvc_experiment": "test-exp",
    }
    index_dir = out / "index"
    kd_index.save(index_dir, index, docids, ds.corpus, meta)
    (out / "params.yaml").write_text(yaml.safe_dump(dataclasses.asdict(params), sort_keys=False))
    return student_dir, index_dir, params


def judged_test_queries(out: Path) -> dict[str, tuple[str, set[str]]]:
    """qid -> (text, relevant docids) of the test split written by `build_artifacts`."""
    ds = read_dataset(out / "data")
    return {
        q: (text, {d for d, rel in ds.qrels["test"][q].items() if rel > 0}) for q, text in ds.queries["test"].items()
    }


if __name__ == "__main__":
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/kd-tiny-artifacts")
    s, i, _ = build_artifacts(target)
    print(f"student: {s}\nindex:   {i}\nparams:  {target / 'params.yaml'}")
