"""The embedded dataset: reST parsing, chunking and the FAQ builder's invariants on the real docs."""

from __future__ import annotations

import re
import textwrap

import pytest

from kd.data.io import validate
from kd.data.python_docs_faq import build, chunk_sections, load
from kd.data.rst import list_pages, parse_page
from kd.errors import DataError
from tests.conftest import build_kwargs


def norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def section_of(docid: str) -> str:
    return docid.rsplit("-", 1)[0]


# ---------------------------------------------------------------- parse_page on hand-written reST

SNIPPET = textwrap.dedent(
    """\
    .. _json-mod:

    =====================
    :mod:`json` --- JSON
    =====================

    .. toctree::
       :maxdepth: 2

       secretpage

    Encoding basics
    ---------------

    Use :func:`len` and ``literal`` and :ref:`the docs <docs-label>`.
    See `Python <https://python.org>`_ and *emphasis*.

    .. function:: json.dumps(obj, *, skipkeys=False)

       Serialize *obj* to a JSON formatted str.

       .. versionadded:: 3.1

    Encoding basics
    ---------------

    .. glossary::

       duck-typing
          A programming style which does not look at an object's type.

    .. index:: single: hidden index entry

    Tail paragraph.
    """
)


@pytest.fixture(scope="module")
def parsed():
    return parse_page("library/json", SNIPPET)


def test_headings_with_and_without_overline(parsed):
    assert [s.heading for s in parsed] == ["json --- JSON", "Encoding basics", "Encoding basics"]
    assert {s.page_title for s in parsed} == {"json --- JSON"}
    assert [s.anchor for s in parsed] == ["json-json", "encoding-basics", "encoding-basics-2"]  # unique


def test_roles_and_markup_cleaned(parsed):
    first = parsed[1].blocks[0].text
    assert first == "Use len and literal and the docs. See Python and emphasis."


def test_object_directive_tagged(parsed):
    sig = parsed[1].blocks[1]
    assert (sig.tag, sig.tag_kind) == ("json.dumps", "object")
    assert sig.text.startswith("json.dumps(obj")
    assert parsed[1].blocks[2].text == "Serialize obj to a JSON formatted str."


def test_glossary_term_tagged(parsed):
    term = parsed[2].blocks[0]
    assert (term.tag, term.tag_kind) == ("duck-typing", "glossary")
    assert term.text.startswith("duck-typing: A programming style")


def test_dropped_directives(parsed):
    all_text = " ".join(b.text for s in parsed for b in s.blocks)
    assert "secretpage" not in all_text and "maxdepth" not in all_text  # toctree content
    assert "hidden index entry" not in all_text and "versionadded" not in all_text
    assert parsed[0].blocks == []
    assert parsed[2].blocks[-1].text == "Tail paragraph."  # text after a dropped directive is kept


def test_chunking_respects_window_and_sections():
    words = " ".join(f"w{i}" for i in range(330))
    sections = parse_page("p", f"Title\n=====\n\n{words}\n\nOther one here\n--------------\n\nshort text\n")
    chunked = chunk_sections(sections, min_words=100, max_words=150)
    lengths = [len(chunked.passages[d]["text"].split()) for d in chunked.section_docids[("p", "title")]]
    assert lengths == [150, 150, 30]  # split at max_words; a tail that does not fit stays separate
    assert chunked.section_docids[("p", "other-one-here")] == ["p#other-one-here-0"]
    assert chunked.passages["p#other-one-here-0"] == {"title": "Title", "text": "short text"}


# ---------------------------------------------------------------- a local Doc/ folder


def write_doc_tree(root):
    (root / "faq").mkdir(parents=True)
    (root / "library").mkdir()
    (root / "faq" / "general.rst").write_text(
        textwrap.dedent(
            """\
            ==================
            General Python FAQ
            ==================

            What is Python?
            ---------------

            Python is an interpreted, interactive, object-oriented programming language.

            Why is it called Python?
            ------------------------

            It is named after a comedy group, not the snake.
            """
        )
    )
    (root / "library" / "x.rst").write_text(
        textwrap.dedent(
            """\
            :mod:`x` --- Archive tools
            ==========================

            Reading compressed tar archives
            -------------------------------

            Archives are opened lazily and members are streamed one by one.

            .. function:: x.extract(path)

               Extract every member of the archive at *path*.
            """
        )
    )
    return root


def test_build_from_local_folder(tmp_path):
    doc = write_doc_tree(tmp_path / "Doc")
    ds = load(None, str(doc), min_words=5, max_words=20, max_train_queries=None, dev_fraction=0.5)
    validate(ds)
    assert ds.meta["source"] == f"local:{doc.resolve()}"
    held_out = {**ds.queries["dev"], **ds.queries["test"]}
    assert sorted(held_out.values()) == ["What is Python?", "Why is it called Python?"]
    assert {**ds.qrels["dev"], **ds.qrels["test"]}["faq:general#what-is-python"] == {"faq/general#what-is-python-0": 1}
    assert ds.corpus["faq/general#what-is-python-0"]["title"] == "General Python FAQ"
    assert sorted(ds.queries["train"].values()) == ["Reading compressed tar archives", "x.extract"]
    positives = {d for docs in ds.qrels["train"].values() for d in docs}
    assert positives == {"library/x#reading-compressed-tar-archives-0"}


def test_doc_dir_without_faq(tmp_path):
    (tmp_path / "library").mkdir()
    (tmp_path / "library" / "x.rst").write_text("Title\n=====\n\nbody\n")
    with pytest.raises(DataError, match=re.escape(str(tmp_path)) + ".*no faq/"):
        load(None, str(tmp_path))
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "missing")) + ".*not a folder"):
        list_pages(tmp_path / "missing")


def test_min_words_above_max_words(tmp_path):
    doc = write_doc_tree(tmp_path / "Doc")
    with pytest.raises(DataError, match=r"min_words=200.*max_words=150"):
        load(None, str(doc), min_words=200, max_words=150)


# ---------------------------------------------------------------- the full build from python3.11-doc


def test_counts_in_range(faq_full, params):
    counts = faq_full.counts()
    assert 8500 <= counts["passages"] <= 9700
    assert 165 <= counts["test_queries"] + counts["dev_queries"] <= 180
    assert 0.25 <= counts["dev_queries"] / (counts["test_queries"] + counts["dev_queries"]) <= 0.42  # about a third
    assert counts["train_queries"] == params.data.max_train_queries
    assert faq_full.meta["source"].startswith("debian:python3.11-doc ")


def test_qrels_resolve_and_ids_unique(faq_full, doc_sources, params):
    validate(faq_full)
    for split, qrels in faq_full.qrels.items():
        assert set(qrels) == set(faq_full.queries[split])
        for docs in qrels.values():
            assert docs and set(docs) <= set(faq_full.corpus)
    # the corpus is a dict, so a clash would silently overwrite: count what chunking produced
    sections = []
    for page, path in list_pages(doc_sources[0]):
        if not page.startswith(tuple(params.data.exclude)):
            sections.extend(parse_page(page, path.read_text(encoding="utf-8")))
    chunked = chunk_sections(sections, params.data.min_words, params.data.max_words)
    assert len(chunked.section_docids) == len(sections) == faq_full.meta["sections"]
    assert sum(len(v) for v in chunked.section_docids.values()) == len(chunked.passages)
    assert chunked.passages == faq_full.corpus


def test_no_held_out_leak_into_training(faq_full):
    held = {**faq_full.queries["dev"], **faq_full.queries["test"]}
    assert not set(faq_full.queries["dev"]) & set(faq_full.queries["test"])
    held_texts = {norm(t) for t in held.values()}
    train = faq_full.queries["train"]
    assert not {norm(t) for t in train.values()} & held_texts
    for qid, docs in faq_full.qrels["train"].items():
        assert not qid.startswith("faq:")
        assert not [d for d in docs if d.startswith("faq/")], qid
    assert all(q.startswith("faq:") and t.endswith("?") for q, t in held.items())


def test_dev_test_split_is_stable_by_query_id(faq_full):
    from kd.data.io import hash_split

    dev, test = hash_split(set(faq_full.queries["dev"]) | set(faq_full.queries["test"]), 0.33)
    assert set(dev) == set(faq_full.queries["dev"]) and set(test) == set(faq_full.queries["test"])


def test_faq_passage_title_is_the_page_not_the_question(faq_full):
    for qid, text in faq_full.queries["test"].items():
        for docid in faq_full.qrels["test"][qid]:
            title = faq_full.corpus[docid]["title"]
            assert title != text and title.endswith("FAQ"), (docid, title)


def test_passage_lengths(faq_full, params):
    lo, hi = params.data.min_words, params.data.max_words
    lengths = {d: len(v["text"].split()) for d, v in faq_full.corpus.items()}
    assert max(lengths.values()) <= hi
    assert sum(lo <= n for n in lengths.values()) / len(lengths) > 0.7
    # a passage below min_words only ends a section (short section, or a tail that did not fit)
    last = {}
    for docid in faq_full.corpus:
        last[section_of(docid)] = max(last.get(section_of(docid), 0), int(docid.rsplit("-", 1)[1]))
    short_inside = [d for d, n in lengths.items() if n < lo and int(d.rsplit("-", 1)[1]) < last[section_of(d)]]
    assert short_inside == []


def test_build_is_stable(faq_full, doc_sources, params):
    sources, version = doc_sources
    again = build(sources, f"debian:{version}", **build_kwargs(params))
    assert again.corpus == faq_full.corpus
    assert again.queries == faq_full.queries
    assert again.qrels == faq_full.qrels
    assert list(again.queries["train"]) == list(faq_full.queries["train"])  # same order too


def test_max_passages_keeps_judged(faq_full, doc_sources, params):
    judged = {d for split in faq_full.qrels.values() for docs in split.values() for d in docs}
    cap = len(judged) + 500
    sources, version = doc_sources
    small = build(sources, f"debian:{version}", **{**build_kwargs(params), "max_passages": cap})
    assert len(small.corpus) == cap
    assert judged <= set(small.corpus)
    assert small.queries == faq_full.queries and small.qrels == faq_full.qrels
    assert all(small.corpus[d] == faq_full.corpus[d] for d in small.corpus)
