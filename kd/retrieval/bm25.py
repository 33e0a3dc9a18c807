"""BM25 with Pyserini's Lucene: index a corpus, search queries into beir-style runs."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

import kd.retrieval.pyserini_shim  # noqa: F401  (must precede any pyserini import)
from kd.atomic import atomic_dir
from kd.data.io import Corpus, passage_text
from kd.retrieval.metrics import Run


def build_index(corpus: Corpus, index_dir: Path, threads: int = 2) -> None:
    """Index title + text as `contents`; written to a temp folder and swapped in when complete."""
    from pyserini.index.lucene import LuceneIndexer

    with atomic_dir(index_dir) as tmp:
        indexer = LuceneIndexer(str(tmp), threads=threads)
        for docid, doc in tqdm(corpus.items(), desc="bm25 index", unit="doc", mininterval=2):
            indexer.add_doc_dict({"id": docid, "contents": passage_text(doc)})
        indexer.close()


def search(
    index_dir: Path, queries: dict[str, str], depth: int, k1: float = 0.9, b: float = 0.4, threads: int = 2
) -> Run:
    """BM25 top-`depth` passages for each query from a Lucene index (Pyserini's `LuceneSearcher`).

    Okapi BM25 (Robertson and Zaragoza, 2009, "The Probabilistic Relevance Framework: BM25 and Beyond"),
    scored by Lucene; queries are searched in batches of 64 on `threads` threads.

    Args:
        index_dir: a folder written by `build_index`.
        queries: query id -> text.
        depth: passages kept per query (`bm25.depth`).
        k1: term-frequency saturation (`bm25.k1`).
        b: length normalisation (`bm25.b`).
        threads: Lucene search threads (`bm25.threads`).

    Returns:
        A run: query id -> {passage id: BM25 score}, at most `depth` passages per query (none for a
        query without a matching term).

    Example::

        run = search(Path("artifacts/bm25/index"), {"q1": "copy a file"}, depth=10)
    """
    from pyserini.search.lucene import LuceneSearcher

    searcher = LuceneSearcher(str(index_dir))
    searcher.set_bm25(k1, b)
    qids = list(queries)
    run: Run = {}
    batch = 64
    for start in tqdm(range(0, len(qids), batch), desc="bm25 search", unit="batch", mininterval=2):
        ids = qids[start : start + batch]
        hits = searcher.batch_search([queries[q] for q in ids], ids, k=depth, threads=threads)
        for qid in ids:
            run[qid] = {h.docid: float(h.score) for h in hits.get(qid, [])}
    searcher.close()
    return run
