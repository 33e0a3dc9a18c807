"""MS MARCO passage through `ir_datasets` (needs a network the first time; cached after).

The seed recipe: a few hundred judged train and dev queries with their judged passages, padded
with other passages up to `max_passages` (BM25 mining then finds hard candidates inside it).
Train/dev come from `msmarco-passage/train/judged`; test from `msmarco-passage/dev/small`.
"""

from __future__ import annotations

import random
from itertools import islice

from kd.config import DEFAULT_SEED
from kd.data.io import Dataset, Qrels, Queries
from kd.errors import DataError


def _take(dataset_id: str, n: int, seed: int) -> tuple[Queries, Qrels]:
    import ir_datasets

    ds = ir_datasets.load(dataset_id)
    qrels: Qrels = {}
    for qrel in ds.qrels_iter():
        if qrel.relevance > 0:
            qrels.setdefault(qrel.query_id, {})[qrel.doc_id] = int(qrel.relevance)
    qids = sorted(qrels)
    random.Random(seed).shuffle(qids)
    chosen = set(qids[:n])
    queries = {q.query_id: q.text for q in ds.queries_iter() if q.query_id in chosen}
    return queries, {q: qrels[q] for q in queries}


def load(
    max_train_queries: int | None = 400,
    max_dev_queries: int | None = 60,
    max_test_queries: int | None = 200,
    max_passages: int | None = 10000,
    seed: int = DEFAULT_SEED,
    dev_fraction: float = 0.33,  # unused: MS MARCO's dev queries come from its own judged train split
) -> Dataset:
    """A slice of MS MARCO passage ranking (Nguyen et al., 2016) through ir_datasets; needs a network once.

    Train and dev queries are sampled (seeded) from `msmarco-passage/train/judged`, test queries from
    `msmarco-passage/dev/small`; the corpus is every judged passage, padded with the collection's first
    passages up to `max_passages`.

    Args:
        max_train_queries: training queries (None: 400).
        max_dev_queries: dev queries, taken apart from the training ones (None: 60).
        max_test_queries: test queries (None: 200).
        max_passages: corpus size after padding (None: the judged passages only).
        seed: sampling seed.
        dev_fraction: unused (MS MARCO has its own dev queries); accepted so every source takes the same keys.

    Raises:
        DataError: ir_datasets missing, or the download failed (with what to do offline).
    """
    try:
        import ir_datasets
    except ImportError as exc:
        raise DataError("data=msmarco needs ir_datasets: `pip install ir-datasets`") from exc
    n_train, n_val = max_train_queries or 400, max_dev_queries or 60
    try:
        trainval_q, trainval_r = _take("msmarco-passage/train/judged", n_train + n_val, seed)
        test_q, test_r = _take("msmarco-passage/dev/small", max_test_queries or 200, seed)
        judged = {d for r in (trainval_r, test_r) for docs in r.values() for d in docs}
        docstore = ir_datasets.load("msmarco-passage").docs_store()
        corpus = {d.doc_id: {"title": "", "text": d.text} for d in docstore.get_many_iter(judged)}
        fill = max(0, (max_passages or len(corpus)) - len(corpus))
        for doc in islice(ir_datasets.load("msmarco-passage").docs_iter(), fill * 2):
            if len(corpus) >= (max_passages or 0):
                break
            corpus.setdefault(doc.doc_id, {"title": "", "text": doc.text})
    except Exception as exc:  # noqa: BLE001 - network/download failures all need the same advice
        raise DataError(
            f"could not load MS MARCO through ir_datasets ({type(exc).__name__}: {str(exc)[:200]}). "
            "It downloads ~1 GB on first use and needs network access; use data=python_docs_faq offline."
        ) from exc
    ids = sorted(trainval_q)
    val_ids, train_ids = set(ids[:n_val]), set(ids[n_val:])
    return Dataset(
        corpus,
        {
            "train": {q: trainval_q[q] for q in sorted(train_ids)},
            "dev": {q: trainval_q[q] for q in sorted(val_ids)},
            "test": test_q,
        },
        {
            "train": {q: trainval_r[q] for q in sorted(train_ids)},
            "dev": {q: trainval_r[q] for q in sorted(val_ids)},
            "test": test_r,
        },
        {"name": "msmarco", "source": "ir_datasets:msmarco-passage"},
    )
