"""The canonical dataset folder: round trip, and bad data fails naming the file and line."""

from __future__ import annotations

import json
import re

import pytest

from kd.data.io import Dataset, passage_text, read_dataset, read_qrels, write_dataset
from kd.errors import DataError


def tiny() -> Dataset:
    corpus = {
        "d1": {"title": "json", "text": "json.dumps serialises an object to a JSON string."},
        "d2": {"title": "", "text": "shutil.copy copies a file."},
        "d3": {"title": "os", "text": "os.remove deletes a file. Ünïcode survives."},
    }
    queries = {
        "train": {"t1": "serialise to json"},
        "dev": {"v1": "copy a file"},
        "test": {"q1": "delete a file", "q2": "dump json"},
    }
    qrels = {
        "train": {"t1": {"d1": 1}},
        "dev": {"v1": {"d2": 1}},
        "test": {"q1": {"d3": 2}, "q2": {"d1": 1, "d2": 0}},
    }
    return Dataset(corpus, queries, qrels, {"name": "tiny"})


def test_round_trip(tmp_path):
    ds = tiny()
    write_dataset(ds, tmp_path / "ds")
    back = read_dataset(tmp_path / "ds")
    assert back.corpus == ds.corpus
    assert back.queries == ds.queries
    assert back.qrels == ds.qrels
    assert back.meta["name"] == "tiny"
    assert back.meta["counts"] == {
        "passages": 3,
        "train_queries": 1, "train_judged": 1,
        "dev_queries": 1, "dev_judged": 1,
        "test_queries": 2, "test_judged": 3,
    }  # fmt: skip
    header = (tmp_path / "ds" / "qrels" / "test.tsv").read_text().splitlines()[0]
    assert header == "query-id\tcorpus-id\tscore"
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == ["corpus.jsonl", "meta.json", "qrels", "queries"]


def test_passage_text():
    assert passage_text({"title": "json", "text": "x"}) == "json. x"
    assert passage_text({"title": "", "text": "x"}) == "x"


@pytest.fixture
def written(tmp_path):
    out = tmp_path / "ds"
    write_dataset(tiny(), out)
    return out


def _edit(path, fn):
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(fn(lines)))


def _raises(data_dir, *patterns):
    with pytest.raises(DataError) as info:
        read_dataset(data_dir)
    for pat in patterns:
        assert re.search(pat, str(info.value)), str(info.value)


def test_missing_file(written):
    (written / "queries" / "dev.jsonl").unlink()
    _raises(written, re.escape(str(written / "queries" / "dev.jsonl")), "not found")


def test_duplicate_passage_id(written):
    _edit(written / "corpus.jsonl", lambda ls: ls + [ls[0]])
    _raises(written, re.escape(f"{written / 'corpus.jsonl'}:4"), "duplicate passage id 'd1'")


def test_duplicate_query_id(written):
    _edit(written / "queries" / "test.jsonl", lambda ls: ls + [ls[1]])
    _raises(written, re.escape(f"{written / 'queries' / 'test.jsonl'}:3"), "duplicate query id 'q2'")


def test_qrels_unknown_passage(written):
    _edit(written / "qrels" / "test.tsv", lambda ls: ls + ["q1\tnope\t1\n"])
    # line 1 is the header, lines 2-4 the three judgements, so the bad one is line 5
    _raises(written, re.escape(f"{written / 'qrels' / 'test.tsv'}:5"), "unknown passage 'nope'")


def test_empty_passage_text(written):
    _edit(written / "corpus.jsonl", lambda ls: ls[:1] + [json.dumps({"_id": "d2", "text": "  "}) + "\n"] + ls[2:])
    _raises(written, re.escape(f"{written / 'corpus.jsonl'}:2"), "empty text")


def test_empty_query_text(written):
    _edit(written / "queries" / "train.jsonl", lambda ls: [json.dumps({"_id": "t1", "text": ""}) + "\n"])
    _raises(written, re.escape(f"{written / 'queries' / 'train.jsonl'}:1"), "empty text")


def test_invalid_json_line(written):
    _edit(written / "corpus.jsonl", lambda ls: ls[:2] + ['{"_id": "d3", "text": \n'])
    _raises(written, re.escape(f"{written / 'corpus.jsonl'}:3"), "not valid JSON")


def test_missing_field(written):
    _edit(written / "corpus.jsonl", lambda ls: ls + [json.dumps({"text": "no id"}) + "\n"])
    _raises(written, re.escape(f"{written / 'corpus.jsonl'}:4"), "_id")


def test_non_integer_relevance(written):
    _edit(written / "qrels" / "dev.tsv", lambda ls: [ls[0], "v1\td2\thigh\n"])
    _raises(written, re.escape(f"{written / 'qrels' / 'dev.tsv'}:2"), "'high' is not an integer")


def test_wrong_field_count_in_qrels(tmp_path):
    path = tmp_path / "q.tsv"
    path.write_text("query-id\tcorpus-id\tscore\nq1 d1 1\n")
    with pytest.raises(DataError, match=re.escape(f"{path}:2") + ".*3 tab-separated"):
        read_qrels(path)


def test_query_without_relevant_passage(written):
    _edit(written / "qrels" / "dev.tsv", lambda ls: [ls[0], "v1\td2\t0\n"])
    _raises(written, "1 dev queries have no relevant passage", "'v1'")


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda ds: ds.qrels["test"]["q1"].update({"ghost": 1}), "unknown passage 'ghost'"),
        (lambda ds: ds.corpus["d2"].update(text=" "), "passage 'd2' has empty text"),
        (lambda ds: ds.queries["dev"].update(v1=""), "dev query 'v1' has empty text"),
        (lambda ds: ds.qrels["train"].update(t9={"d1": 1}), "query 't9' missing from queries"),
    ],
)
def test_write_validates_and_leaves_nothing(tmp_path, spoil, message):
    ds = tiny()
    spoil(ds)
    out = tmp_path / "ds"
    with pytest.raises(DataError, match=message) as info:
        write_dataset(ds, out)
    assert str(out) in str(info.value)
    assert list(tmp_path.iterdir()) == []  # no partial folder, no temp sibling


def test_failed_write_keeps_old_folder(written):
    ds = tiny()
    ds.corpus["d1"]["text"] = ""
    with pytest.raises(DataError):
        write_dataset(ds, written)
    assert read_dataset(written).corpus == tiny().corpus
    assert sorted(p.name for p in written.parent.iterdir()) == ["ds"]
