"""Retrieval: BM25 (Lucene through Pyserini), the FAISS index, the search/score/rerank core, and metrics.

`search` is the one place that encodes queries, searches an index, scores (query, passage) pairs and
reranks: the stages, the service's Engine, the evaluation and the benchmarks all call it. `metrics` holds
the beir/trec contracts (qrels, runs) and ir-measures; `evaluation` the tables, gaps and paired tests.
"""
