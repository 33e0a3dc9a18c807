"""BM25 with Pyserini's Lucene: index a corpus, search queries into beir-style runs."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

import kd.pyserini_shim  # noqa: F401  (must precede any pyserini import)
from kd.atomic import atomic_dir
from kd.data.io import Corpus, passage_text
from kd.metrics import Run


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
