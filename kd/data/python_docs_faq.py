"""The embedded default dataset: the CPython documentation, with the FAQ questions held out as dev and test.

Corpus: every section of every page, chunked into passages of `min_words`..`max_words` words;
title = the page title (never the section heading, which for the FAQ *is* the test query).
Dev and test: each FAQ question heading (split by a stable hash of its id); relevant = the passages of
that question's own answer.
Train/val: from the other pages only — informative section headings (positives: that section's
passages), API objects (`.. function:: json.dumps` -> `json.dumps`, positive: the passage holding
its description) and glossary terms ("What is <term>?"). No FAQ page feeds training, so no held-out
question or answer wording is trained on.

Any Sphinx documentation with `faq/` pages builds the same way, from reST sources or, for packages
that ship only the built site, from its HTML (`kd.data.sphinx_html`; conf/data/django_docs_faq.yaml).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kd.config import DEFAULT_SEED
from kd.data.debian import fetch_debian_docs
from kd.data.io import Dataset, Qrels, Queries, hash_split
from kd.data.rst import list_pages, parse_file
from kd.data.sections import Block, Section, slugify
from kd.errors import DataError

GENERIC_HEADINGS = {
    "introduction", "examples", "example", "overview", "notes", "usage", "basic usage",
    "summary", "see also", "footnotes", "references", "functions", "classes", "constants",
    "exceptions", "module contents", "other changes", "new features", "deprecated", "removed",
}  # fmt: skip


# ---------------------------------------------------------------- chunking


@dataclass
class Chunked:
    """Sections packed into passages (`chunk_sections`).

    Attributes:
        passages: passage id (`<page>#<anchor>-<n>`) -> `{"title", "text"}`, title = the page title.
        section_docids: (page, anchor) -> the ids of that section's passages.
        tags: (kind, tag, page, passage id) for each API object or glossary term, and the passage that
            documents it.
    """

    passages: dict[str, dict[str, str]]
    section_docids: dict[tuple[str, str], list[str]]  # (page, anchor) -> docids
    tags: list[tuple[str, str, str, str]]  # (kind, tag, page, docid)


def chunk_sections(sections: Iterable[Section], min_words: int, max_words: int) -> Chunked:
    """Greedy paragraph packing into `min_words`..`max_words` word passages, never across sections."""
    out = Chunked({}, {}, [])
    for sec in sections:
        chunks: list[list[str]] = []
        current: list[str] = []
        tagged: list[tuple[int, Block]] = []
        for block in sec.blocks:
            words = block.text.split()
            if block.tag:
                start_chunk = len(chunks) + (1 if len(current) >= max_words else 0)
                if current and len(current) + len(words) > max_words and len(current) >= min_words:
                    start_chunk = len(chunks) + 1
                tagged.append((start_chunk, block))
            if current and len(current) + len(words) > max_words and len(current) >= min_words:
                chunks.append(current)
                current = []
            current.extend(words)
            while len(current) > max_words:
                chunks.append(current[:max_words])
                current = current[max_words:]
        if current:
            # a short tail joins the previous passage only if that stays within max_words
            if chunks and len(current) < min_words // 3 and len(chunks[-1]) + len(current) <= max_words:
                chunks[-1].extend(current)
            else:
                chunks.append(current)
        docids = []
        for n, words in enumerate(chunks):
            docid = f"{sec.page}#{sec.anchor}-{n}"
            out.passages[docid] = {"title": sec.page_title, "text": " ".join(words)}
            docids.append(docid)
        out.section_docids[(sec.page, sec.anchor)] = docids
        for idx, block in tagged:
            if docids and block.tag and block.tag_kind:
                out.tags.append((block.tag_kind, block.tag, sec.page, docids[min(idx, len(docids) - 1)]))
    return out


# ---------------------------------------------------------------- queries


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def build(
    doc_dir: Path,
    source: str,
    *,
    min_words: int = 100,
    max_words: int = 150,
    max_passages: int | None = None,
    max_train_queries: int | None = None,
    max_dev_queries: int | None = None,
    max_test_queries: int | None = None,
    dev_fraction: float = 0.33,
    exclude: tuple[str, ...] = ("whatsnew/",),
    seed: int = DEFAULT_SEED,
) -> Dataset:
    """The dataset from a Sphinx documentation folder with `faq/` pages (reST sources or built HTML).

    Sections are packed into passages of `min_words`..`max_words` words, never across sections. FAQ
    question headings (ending in "?") are held out, split into dev and test by a stable hash of their ids
    (`dev_fraction` to dev); their relevant passages are their own answer's. Training queries come from the
    other pages only: informative headings, API object names and glossary terms ("What is <term>?"), two
    natural-language queries for each API name, seeded order.

    Args:
        doc_dir: the documentation folder (what `fetch_debian_docs` returns, or `data.doc_dir`).
        source: provenance written to `meta.json` (e.g. `debian:python3.11-doc 3.11.2-6`).
        min_words: shortest passage (`data.min_words`).
        max_words: longest passage (`data.max_words`).
        max_passages: cap the corpus, keeping every judged passage (None: all).
        max_train_queries: training queries kept (None: all).
        max_dev_queries: dev questions kept, sampled with `seed` (None: all).
        max_test_queries: test questions kept, likewise.
        dev_fraction: share of the FAQ questions that go to dev.
        exclude: page path prefixes left out (release notes, generated index pages).
        seed: seed of the training-query order and the samples.

    Raises:
        DataError: bad word bounds, or a folder without FAQ questions.

    Example::

        sources, version = fetch_debian_docs("python3.11-doc")
        ds = build(sources, f"debian:{version}", max_train_queries=600)
    """
    if not 0 < min_words <= max_words:
        raise DataError(f"data.min_words={min_words} must be >0 and <= data.max_words={max_words}")
    sections: list[Section] = []
    for page, path in list_pages(doc_dir):
        if page.startswith(tuple(exclude)):
            continue
        sections.extend(parse_file(page, path))
    chunked = chunk_sections(sections, min_words, max_words)

    # held out (dev + test): FAQ question headings -> passages of their own answer
    test_q: Queries = {}
    test_qrels: Qrels = {}
    for sec in sections:
        docids = chunked.section_docids[(sec.page, sec.anchor)]
        if sec.page.startswith("faq/") and sec.heading.endswith("?") and docids:
            qid = f"faq:{sec.page.removeprefix('faq/')}#{sec.anchor}"
            test_q[qid] = sec.heading
            test_qrels[qid] = {d: 1 for d in docids}
    test_texts = {_norm(t) for t in test_q.values()}
    faq_docids = {d for d in chunked.passages if d.startswith("faq/")}

    # train/val pool: non-FAQ headings, API objects, glossary terms
    pool: dict[str, tuple[str, dict[str, int]]] = {}
    for sec in sections:
        docids = chunked.section_docids[(sec.page, sec.anchor)]
        words = sec.heading.split()
        if (
            sec.page.startswith("faq/")
            or not docids
            or len(words) < 3
            or _norm(sec.heading) in GENERIC_HEADINGS
            or sec.heading == sec.page_title
        ):
            continue
        pool[f"sec:{sec.page}#{sec.anchor}"] = (sec.heading, {d: 1 for d in docids})
    for kind, tag, page, docid in chunked.tags:
        if page.startswith("faq/") or docid in faq_docids:
            continue
        text = f"What is {tag}?" if kind == "glossary" else tag
        qid = f"{'gloss' if kind == 'glossary' else 'obj'}:{page}#{slugify(tag)}"
        if qid not in pool and len(tag) > 1:
            pool[qid] = (text, {docid: 1})
    pool = {q: v for q, v in pool.items() if _norm(v[0]) not in test_texts}

    # two natural-language queries (headings, glossary) for every API-name query
    rng = random.Random(seed)
    natural = sorted(q for q in pool if not q.startswith("obj:"))
    api = sorted(q for q in pool if q.startswith("obj:"))
    rng.shuffle(natural)
    rng.shuffle(api)
    pool_ids = []
    while natural or api:
        pool_ids.extend(natural[:2] + api[:1])
        natural, api = natural[2:], api[1:]
    train_ids = pool_ids if max_train_queries is None else pool_ids[:max_train_queries]
    # the FAQ questions are the held-out set: a stable hash of the id puts about a third in dev
    dev_ids, test_ids = hash_split(set(test_q), dev_fraction)
    if max_dev_queries is not None and max_dev_queries < len(dev_ids):
        dev_ids = sorted(random.Random(seed).sample(dev_ids, max_dev_queries))
    if max_test_queries is not None and max_test_queries < len(test_ids):
        test_ids = sorted(random.Random(seed).sample(test_ids, max_test_queries))

    queries = {
        "train": {q: pool[q][0] for q in train_ids},
        "dev": {q: test_q[q] for q in dev_ids},
        "test": {q: test_q[q] for q in test_ids},
    }
    qrels = {
        "train": {q: pool[q][1] for q in train_ids},
        "dev": {q: test_qrels[q] for q in dev_ids},
        "test": {q: test_qrels[q] for q in test_ids},
    }
    corpus = chunked.passages
    if max_passages is not None and max_passages < len(corpus):
        keep = {d for split in qrels.values() for docs in split.values() for d in docs}
        others = sorted(set(corpus) - keep)
        random.Random(seed).shuffle(others)
        keep |= set(others[: max(0, max_passages - len(keep))])
        corpus = {d: v for d, v in corpus.items() if d in keep}
    meta = {
        "name": "python_docs_faq",
        "source": source,
        "pages": len({s.page for s in sections}),
        "sections": len(sections),
        "min_words": min_words,
        "max_words": max_words,
        "exclude": list(exclude),
        "seed": seed,
        "dev_fraction": dev_fraction,
    }
    return Dataset(corpus, queries, qrels, meta)


def load(debian_package: str | None, doc_dir: str | None, **kwargs: object) -> Dataset:
    """Resolve the doc sources (local folder wins over apt) and build the dataset."""
    if doc_dir:
        path = Path(doc_dir).expanduser()
        return build(path, f"local:{path.resolve()}", **kwargs)  # type: ignore[arg-type]
    if not debian_package:
        raise DataError("set data.debian_package (e.g. python3.11-doc) or data.doc_dir")
    sources, version = fetch_debian_docs(debian_package)
    return build(sources, f"debian:{version}", **kwargs)  # type: ignore[arg-type]
