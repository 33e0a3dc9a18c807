"""The one canonical dataset format (BEIR conventions) and its validated reader/writer.

On disk, under one folder:
    corpus.jsonl            {"_id", "title", "text"} per line
    queries/<split>.jsonl   {"_id", "text"} per line
    qrels/<split>.tsv       BEIR tsv: header `query-id corpus-id score`, tab-separated
    meta.json               source, version, counts
Splits are `train`, `dev`, `test`: dev chooses (defaults, early stopping), test only reports. Every source module builds a `Dataset`; `write_dataset`
validates before anything is written, `read_dataset` validates with file:line messages.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kd.atomic import atomic_dir
from kd.errors import DataError

SPLITS = ("train", "dev", "test")

Corpus = dict[str, dict[str, str]]  # docid -> {"title", "text"}
Queries = dict[str, str]  # qid -> text
Qrels = dict[str, dict[str, int]]  # qid -> docid -> relevance


@dataclass
class Dataset:
    """The canonical dataset every source produces and every stage reads (`data/` on disk).

    Attributes:
        corpus: passage id -> `{"title", "text"}`.
        queries: split (`train`, `dev`, `test`) -> query id -> text.
        qrels: split -> query id -> {passage id: relevance}; relevance > 0 is relevant.
        meta: where it came from and how it was built (source, caps, seed), written to `meta.json`.
    """

    corpus: Corpus
    queries: dict[str, Queries]  # split -> queries
    qrels: dict[str, Qrels]  # split -> qrels
    meta: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Passages, and queries and judgements per split: `{"passages", "train_queries", "train_judged", ...}`."""
        out = {"passages": len(self.corpus)}
        for split in SPLITS:
            out[f"{split}_queries"] = len(self.queries.get(split, {}))
            out[f"{split}_judged"] = sum(len(d) for d in self.qrels.get(split, {}).values())
        return out


def hash_split(qids: list[str] | set[str], fraction: float) -> tuple[list[str], list[str]]:
    """(dev, test): a query goes to dev when a stable hash of its id falls below `fraction`.

    Stable across runs, machines and corpus caps, so no choice ever sees a test query.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"data.dev_fraction={fraction} must be between 0 and 1 (exclusive): a third is usual")
    dev: list[str] = []
    test: list[str] = []
    for q in sorted(qids):
        bucket = int(hashlib.sha1(q.encode("utf-8")).hexdigest()[:8], 16) / 2**32
        (dev if bucket < fraction else test).append(q)
    return dev, test


def judged(qrels: dict[str, Qrels], splits: tuple[str, ...] = ("dev", "test")) -> set[str]:
    """Passages judged for the held-out splits: never trained on, mined or used as padding."""
    return {d for s in splits for docs in qrels.get(s, {}).values() for d in docs}


def passage_text(doc: dict[str, str]) -> str:
    """What a model sees of a passage: the title, then the text."""
    title = doc.get("title", "")
    return f"{title}. {doc['text']}" if title else doc["text"]


def validate(ds: Dataset, where: str = "dataset") -> None:
    """Ids unique by construction (dicts); check texts non-empty and qrels resolve."""
    for docid, doc in ds.corpus.items():
        if not doc.get("text", "").strip():
            raise DataError(f"{where}: passage '{docid}' has empty text")
    for split, queries in ds.queries.items():
        for qid, text in queries.items():
            if not text.strip():
                raise DataError(f"{where}: {split} query '{qid}' has empty text")
    for split, qrels in ds.qrels.items():
        queries = ds.queries.get(split, {})
        for qid, docs in qrels.items():
            if qid not in queries:
                raise DataError(f"{where}: {split} qrels name query '{qid}' missing from queries")
            for docid in docs:
                if docid not in ds.corpus:
                    raise DataError(
                        f"{where}: {split} qrels of query '{qid}' point at unknown passage '{docid}'"
                    )
    for split, queries in ds.queries.items():
        unjudged = [q for q in queries if not any(ds.qrels.get(split, {}).get(q, {}).values())]
        if unjudged:
            raise DataError(
                f"{where}: {len(unjudged)} {split} queries have no relevant passage "
                f"(first: '{unjudged[0]}'); drop them or add qrels"
            )


def _jsonl(records: Iterator[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def write_dataset(ds: Dataset, out_dir: Path) -> None:
    """Validate, then write the whole folder atomically (a crash leaves the old one or none)."""
    validate(ds, str(out_dir))
    ds.meta["counts"] = ds.counts()
    with atomic_dir(out_dir) as tmp:
        (tmp / "queries").mkdir()
        (tmp / "qrels").mkdir()
        (tmp / "corpus.jsonl").write_text(
            _jsonl({"_id": d, "title": v.get("title", ""), "text": v["text"]} for d, v in ds.corpus.items())
        )
        for split in SPLITS:
            queries = ds.queries.get(split, {})
            (tmp / "queries" / f"{split}.jsonl").write_text(
                _jsonl({"_id": q, "text": t} for q, t in queries.items())
            )
            rows = ["query-id\tcorpus-id\tscore\n"]
            for qid, docs in ds.qrels.get(split, {}).items():
                rows.extend(f"{qid}\t{docid}\t{rel}\n" for docid, rel in docs.items())
            (tmp / "qrels" / f"{split}.tsv").write_text("".join(rows))
        (tmp / "meta.json").write_text(json.dumps(ds.meta, indent=2, sort_keys=True) + "\n")


def _need(path: Path) -> Path:
    if not path.exists():
        raise DataError(f"{path} not found: run `dvc repro data` (or check data.path for beir_dir)")
    return path


def read_jsonl(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each non-empty line of a JSON-lines file.

    Raises:
        DataError: `path:line:` for a missing file, invalid JSON, a non-object line or a missing
            `required` field.
    """
    with _need(path).open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
            if not isinstance(rec, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object")
            missing = [k for k in required if k not in rec]
            if missing:
                raise DataError(f"{path}:{lineno}: missing field(s) {missing}")
            yield lineno, rec


def _unique_texts(path: Path, kind: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(id, text, record) of each line of a `{"_id", "text", ...}` file; a DataError names the line of a
    duplicate id or an empty text (`kind`: passage or query)."""
    seen: set[str] = set()
    for lineno, rec in read_jsonl(path, ("_id", "text")):
        key = str(rec["_id"])
        if key in seen:
            raise DataError(f"{path}:{lineno}: duplicate {kind} id '{key}'")
        text = str(rec["text"] or "")
        if not text.strip():
            raise DataError(f"{path}:{lineno}: {kind} '{key}' has empty text")
        seen.add(key)
        yield key, text, rec


def read_corpus(path: Path) -> Corpus:
    """`corpus.jsonl` (`{"_id", "title", "text"}` per line) -> passage id -> `{"title", "text"}`.

    Raises:
        DataError: naming the line of a duplicate id or an empty text.
    """
    return {d: {"title": str(rec.get("title") or ""), "text": text} for d, text, rec in _unique_texts(path, "passage")}


def read_queries(path: Path) -> Queries:
    """A queries file (`{"_id", "text"}` per line) -> query id -> text.

    Raises:
        DataError: naming the line of a duplicate id or an empty text.
    """
    return {q: text for q, text, _ in _unique_texts(path, "query")}


def read_qrels(path: Path, corpus: Corpus | None = None) -> Qrels:
    """A BEIR qrels TSV (`query-id<TAB>corpus-id<TAB>score`, optional header) -> query id -> {passage id: relevance}.

    Args:
        path: the TSV file.
        corpus: if given, every judged passage must be in it.

    Raises:
        DataError: naming the line of a wrong field count, an unknown passage or a non-integer relevance.
    """
    qrels: Qrels = {}
    with _need(path).open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.rstrip("\n").split("\t")
            if lineno == 1 and parts[:2] == ["query-id", "corpus-id"]:
                continue
            if not line.strip():
                continue
            if len(parts) != 3:
                raise DataError(f"{path}:{lineno}: expected 3 tab-separated fields, got {len(parts)}")
            qid, docid, rel = parts
            if corpus is not None and docid not in corpus:
                raise DataError(f"{path}:{lineno}: query '{qid}' points at unknown passage '{docid}'")
            try:
                qrels.setdefault(qid, {})[docid] = int(rel)
            except ValueError as exc:
                raise DataError(f"{path}:{lineno}: relevance '{rel}' is not an integer") from exc
    return qrels


def read_dataset(data_dir: Path) -> Dataset:
    """The dataset the `data` stage wrote (`corpus.jsonl`, `queries/{split}.jsonl`, `qrels/{split}.tsv`,
    `meta.json`), validated: texts non-empty, qrels point at known queries and passages, and every query has
    a relevant passage (`validate`).

    Example::

        ds = read_dataset(Path("data"))
        len(ds.queries["test"]), len(ds.corpus)
    """
    data_dir = Path(data_dir)
    corpus = read_corpus(data_dir / "corpus.jsonl")
    queries = {s: read_queries(data_dir / "queries" / f"{s}.jsonl") for s in SPLITS}
    qrels = {s: read_qrels(data_dir / "qrels" / f"{s}.tsv", corpus) for s in SPLITS}
    meta_path = data_dir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    ds = Dataset(corpus, queries, qrels, meta)
    validate(ds, str(data_dir))
    return ds
