"""Any local BEIR-format folder (users' own corpora) into the canonical dataset.

Expected: corpus.jsonl, queries.jsonl, qrels/<split>.tsv for split in train, dev|val, test.
Missing train qrels are fine (the pipeline then has nothing to train on and says so). Without dev
qrels, `data.dev_fraction` of the test queries (by a stable hash of their ids) become dev.
"""

from __future__ import annotations

from pathlib import Path

from kd.data.io import Dataset, Qrels, Queries, hash_split, read_corpus, read_qrels, read_queries
from kd.errors import DataError

SPLIT_FILES = {"train": ("train",), "dev": ("dev", "val", "validation"), "test": ("test",)}


def _limit(qrels: Qrels, n: int | None) -> Qrels:
    return qrels if n is None else {q: qrels[q] for q in sorted(qrels)[:n]}


def load(
    path: str | None,
    max_train_queries: int | None = None,
    max_dev_queries: int | None = None,
    max_test_queries: int | None = None,
    max_passages: int | None = None,
    dev_fraction: float = 0.33,
) -> Dataset:
    """A local BEIR-format folder (Thakur et al., 2021, "BEIR: A Heterogeneous Benchmark for Zero-shot
    Evaluation of Information Retrieval Models") as a `Dataset`.

    The folder holds `corpus.jsonl` (`{"_id", "title", "text"}` per line), `queries.jsonl`
    (`{"_id", "text"}`) and `qrels/{train,dev,test}.tsv` (`query-id corpus-id score`, a header line
    allowed). Queries whose judgements are all 0 are dropped. Without a dev file, a stable hash of the
    query ids moves `dev_fraction` of the test queries to dev, so choices never see test.

    Args:
        path: the folder (`data.path`); required.
        max_train_queries: keep at most this many training queries (None: all).
        max_dev_queries: likewise for dev.
        max_test_queries: likewise for test.
        max_passages: cap the corpus, always keeping judged passages (None: all).
        dev_fraction: share of test moved to dev when there is no dev file.

    Raises:
        DataError: naming the file (and line) of anything missing or malformed.

    Example::

        ds = load("/data/scifact", max_passages=20_000)
        ds.counts()  # {"passages": ..., "train_queries": ..., "dev_judged": ..., ...}
    """
    if not path:
        raise DataError("data=beir_dir needs data.path: `dvc exp run -S data=beir_dir -S data.path=/abs/dir`")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"data.path={root} is not a folder (want corpus.jsonl, queries.jsonl, qrels/)")
    corpus = read_corpus(root / "corpus.jsonl")
    all_queries = read_queries(root / "queries.jsonl")
    limits = {"train": max_train_queries, "dev": max_dev_queries, "test": max_test_queries}
    found_qrels: dict[str, Qrels] = {}
    for split, names in SPLIT_FILES.items():
        found = [root / "qrels" / f"{n}.tsv" for n in names if (root / "qrels" / f"{n}.tsv").exists()]
        split_qrels = read_qrels(found[0], corpus) if found else {}
        split_qrels = {q: d for q, d in split_qrels.items() if any(r > 0 for r in d.values())}
        missing = sorted(set(split_qrels) - set(all_queries))
        if missing:
            raise DataError(f"{found[0]}: query '{missing[0]}' is not in {root / 'queries.jsonl'}")
        found_qrels[split] = split_qrels
    if not found_qrels["test"]:
        raise DataError(f"{root / 'qrels' / 'test.tsv'} is missing or empty: a test split is required")
    if not found_qrels["dev"]:  # no dev file: hold out part of test for choosing, by a stable hash
        dev_ids, test_ids = hash_split(set(found_qrels["test"]), dev_fraction)
        held = found_qrels["test"]
        found_qrels["dev"] = {q: held[q] for q in dev_ids}
        found_qrels["test"] = {q: held[q] for q in test_ids}
    qrels: dict[str, Qrels] = {s: _limit(found_qrels[s], limits[s]) for s in SPLIT_FILES}
    queries: dict[str, Queries] = {s: {q: all_queries[q] for q in qrels[s]} for s in SPLIT_FILES}
    if max_passages is not None and max_passages < len(corpus):
        keep = {d for s in qrels.values() for docs in s.values() for d in docs}
        keep |= set(sorted(set(corpus) - keep)[: max(0, max_passages - len(keep))])
        corpus = {d: v for d, v in corpus.items() if d in keep}
    return Dataset(corpus, queries, qrels, {"name": "beir_dir", "source": f"local:{root.resolve()}"})
