"""kd.evaluation: teacher rerank re-orders the head and keeps the tail (real MiniLM teacher)."""

from kd.config import ModelConfig
from kd.evaluation import markdown_table, rerank
from kd.models import load_teacher


def test_rerank_reorders_top_k_only() -> None:
    teacher = load_teacher(ModelConfig(name="minilm", model="minilm", max_seq_length=64))
    run = {"q": {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6}}
    docs = {
        "a": "The Eiffel Tower is a landmark in Paris.",
        "b": "To read a text file, open it with open() and call read().",
        "c": "Lists can be sorted in place with list.sort().",
        "d": "Reading a file: open() returns a file object whose read() method returns its contents.",
    }
    out = rerank(run, 3, {"q": "How do I read a file?"}, docs, teacher)
    order = sorted(out["q"], key=lambda d: -out["q"][d])
    assert order[0] == "b"  # the teacher lifts the relevant passage to the top
    assert order[-1] == "d"  # beyond the rerank depth, untouched even though it is relevant
    assert set(order) == set(run["q"])


def test_markdown_table() -> None:
    md = markdown_table({"bm25": {"nDCG@10": 0.25}}, ["nDCG@10"])
    assert "| bm25 | 0.2500 |" in md
