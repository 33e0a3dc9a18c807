"""A local BEIR folder (here: a slice of the real FAQ dataset written in BEIR layout) loads as-is."""

from __future__ import annotations

import json
import re

import pytest

from kd.config import BeirDirData
from kd.data import beir_dir, load_source
from kd.data.io import read_dataset, validate, write_dataset
from kd.errors import DataError


def write_beir(root, corpus, queries, qrels_by_file):
    (root / "qrels").mkdir(parents=True)
    with (root / "corpus.jsonl").open("w") as fh:
        for d, doc in corpus.items():
            fh.write(json.dumps({"_id": d, "title": doc["title"], "text": doc["text"]}) + "\n")
    with (root / "queries.jsonl").open("w") as fh:
        for q, text in queries.items():
            fh.write(json.dumps({"_id": q, "text": text, "metadata": {}}) + "\n")
    for name, qrels in qrels_by_file.items():
        rows = ["query-id\tcorpus-id\tscore\n"]
        rows += [f"{q}\t{d}\t{r}\n" for q, docs in qrels.items() for d, r in docs.items()]
        (root / "qrels" / f"{name}.tsv").write_text("".join(rows))
    return root


@pytest.fixture(scope="module")
def faq_slice(faq_full):
    """10 test and 5 dev FAQ-dataset queries, their passages and 20 unjudged others."""
    test = dict(sorted(faq_full.qrels["test"].items())[:10])
    val = dict(sorted(faq_full.qrels["dev"].items())[:5])
    judged = sorted({d for qrels in (test, val) for docs in qrels.values() for d in docs})
    others = sorted(set(faq_full.corpus) - set(judged))[:20]
    corpus = {d: faq_full.corpus[d] for d in judged + others}
    queries = {q: faq_full.queries[s][q] for s, qrels in (("test", test), ("dev", val)) for q in qrels}
    return corpus, queries, test, val


@pytest.fixture
def folder(tmp_path, faq_slice):
    corpus, queries, test, val = faq_slice
    return write_beir(tmp_path / "beir", corpus, queries, {"test": test, "dev": val})


def test_loads_real_slice(folder, faq_slice):
    corpus, queries, test, val = faq_slice
    ds = beir_dir.load(str(folder))
    validate(ds)
    assert ds.corpus == corpus
    assert ds.qrels == {"train": {}, "dev": val, "test": test}  # dev.tsv is the dev split
    assert ds.queries["test"] == {q: queries[q] for q in test}
    assert ds.queries["dev"] == {q: queries[q] for q in val}
    assert ds.meta["source"] == f"local:{folder.resolve()}"


def test_through_load_source_and_round_trip(folder, tmp_path):
    ds = load_source(BeirDirData(path=str(folder), max_test_queries=3), seed=13)
    assert len(ds.queries["test"]) == 3
    write_dataset(ds, tmp_path / "out")
    back = read_dataset(tmp_path / "out")
    assert back.corpus == ds.corpus and back.qrels == ds.qrels and back.queries == ds.queries


def test_max_passages_keeps_judged(folder, faq_slice):
    corpus, _, test, val = faq_slice
    judged = {d for qrels in (test, val) for docs in qrels.values() for d in docs}
    ds = beir_dir.load(str(folder), max_passages=len(judged) + 5)
    assert judged <= set(ds.corpus) and len(ds.corpus) == len(judged) + 5


def test_zero_relevance_only_queries_dropped(tmp_path):
    corpus = {"d1": {"title": "", "text": "one"}, "d2": {"title": "", "text": "two"}}
    root = write_beir(tmp_path / "b", corpus, {"q1": "a", "q2": "b"}, {"test": {"q1": {"d1": 1}, "q2": {"d2": 0}}})
    ds = beir_dir.load(str(root))
    assert ds.qrels["test"] == {"q1": {"d1": 1}} and list(ds.queries["test"]) == ["q1"]


def test_errors(tmp_path, folder):
    with pytest.raises(DataError, match=r"data\.path"):
        beir_dir.load(None)
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "nowhere")) + " is not a folder"):
        beir_dir.load(str(tmp_path / "nowhere"))
    (folder / "qrels" / "test.tsv").unlink()
    with pytest.raises(DataError, match=re.escape(str(folder / "qrels" / "test.tsv"))):
        beir_dir.load(str(folder))


def test_qrels_naming_unknown_query_or_passage(tmp_path):
    corpus = {"d1": {"title": "", "text": "one"}}
    root = write_beir(tmp_path / "b", corpus, {"q1": "a"}, {"test": {"q1": {"d1": 1}, "q9": {"d1": 1}}})
    with pytest.raises(DataError, match=re.escape(str(root / "qrels" / "test.tsv")) + ".*'q9'"):
        beir_dir.load(str(root))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\tghost\t1\n")
    with pytest.raises(DataError, match=re.escape(f"{root / 'qrels' / 'test.tsv'}:3") + ".*'ghost'"):
        beir_dir.load(str(root))


def test_without_dev_qrels_a_stable_share_of_test_becomes_dev(tmp_path, faq_slice):
    corpus, queries, test, val = faq_slice
    both = {**test, **val}
    root = write_beir(tmp_path / "nodev", corpus, queries, {"test": both})
    ds = beir_dir.load(str(root), dev_fraction=0.4)
    assert ds.qrels["dev"] and ds.qrels["test"]
    assert set(ds.qrels["dev"]) | set(ds.qrels["test"]) == set(both)
    assert not set(ds.qrels["dev"]) & set(ds.qrels["test"])
    again = beir_dir.load(str(root), dev_fraction=0.4)
    assert again.qrels["dev"] == ds.qrels["dev"]  # the same split every time
