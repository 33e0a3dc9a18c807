"""Helpers for the service tests, which run on the smoke pipeline's artifacts (`smoke_repo`)."""

from __future__ import annotations

import json
from pathlib import Path

from kd.config import Params
from kd.data.io import read_dataset

REPO = Path(__file__).resolve().parent.parent


def judged_test_queries(root: Path) -> dict[str, tuple[str, set[str]]]:
    """qid -> (text, relevant docids) of the test split in `root/data`."""
    ds = read_dataset(root / "data")
    return {
        q: (text, {d for d, rel in ds.qrels["test"][q].items() if rel > 0}) for q, text in ds.queries["test"].items()
    }


def teacher_corpus_dir(root: Path, params: Params, out: Path) -> Path:
    """The smoke run's teacher passage embeddings; built here (same maths as stage teacher_corpus) if it has none."""
    from kd.data.io import passage_text
    from kd.models import teacher_corpus
    from kd.models.teacher import BiEncoderTeacher, load_teacher, model_key

    made = root / "artifacts" / "teacher_corpus"
    meta = made / teacher_corpus.META
    if meta.is_file() and json.loads(meta.read_text()).get("count"):
        return made
    if (out / teacher_corpus.META).is_file():
        return out
    ds = read_dataset(root / "data")
    docids = sorted(ds.corpus)
    texts = [passage_text(ds.corpus[d]) for d in docids]
    teacher = load_teacher(params.teacher)
    assert isinstance(teacher, BiEncoderTeacher)
    key = model_key(params.teacher)
    info = {"model": params.teacher.model, "kind": params.teacher.kind, "model_key": key,
            "fingerprint": teacher_corpus.fingerprint(docids, texts, key)}  # fmt: skip
    teacher_corpus.write(out, docids, teacher.encode_passages(texts), info)
    return out
