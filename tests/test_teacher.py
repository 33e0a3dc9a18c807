"""kd.models.teacher: both teacher kinds (raw cross-encoder logits, prefixes), the content-addressed cache, the chunked, resumable group scorer (real MiniLM teacher),
score normalisation, and concurrent writers (two real processes over one cache)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kd.config import ModelConfig
from kd.distill.teacher_scores import group_fingerprint, normalize_groups, normalize_scores, score_groups
from kd.errors import ConfigError, ModelLoadError
from kd.models.loading import encode, untrained_head
from kd.models.store import minilm_path, tiny_cross_encoder_pairs, tiny_cross_encoder_path
from kd.models.teacher import BiEncoderTeacher, CrossEncoderTeacher, load_teacher, model_key
from kd.models.teacher_cache import CachedTeacher, VectorCache
from kd.models.teacher_corpus import TeacherCorpus
from tests.pipeline_fixtures import ROOT, env

CFG = ModelConfig(name="minilm", model="minilm", kind="bi_encoder", max_seq_length=64, batch_size=8)

GROUPS = pd.DataFrame(
    {"qid": ["q1", "q2", "q3"], "pos_id": ["d1", "d2", "d3"], "neg_ids": [["d2", "d3"], ["d1", "d3"], ["d1", "d2"]]}
)
QUERIES = {"q1": "read a file", "q2": "sort a list", "q3": "parse json"}
DOCS = {"d1": "open() reads files", "d2": "sorted() sorts lists", "d3": "json.loads parses JSON"}


def test_vector_cache_persists_and_only_computes_missing(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def compute(xs: list[str]) -> np.ndarray:
        calls.append(xs)
        return np.array([[len(x), 1.0] for x in xs], dtype=np.float32)

    cache = VectorCache(tmp_path)
    out = cache.fill(["a", "bb", "a"], compute, chunk=1, desc="t")
    assert out.tolist() == [[1, 1], [2, 1], [1, 1]]
    assert calls == [["a"], ["bb"]]  # distinct texts once, one shard per chunk
    assert len(list(tmp_path.glob("shard-*.npz"))) == 2
    again = VectorCache(tmp_path)  # a new process sees the shards
    again.fill(["bb", "ccc"], compute, chunk=8, desc="t")
    assert calls[-1] == ["ccc"]


def test_vector_cache_reads_shards_written_after_it_loaded(tmp_path: Path) -> None:
    """Another run's work, finished after this cache was opened, is reused instead of recomputed."""
    mine, theirs = VectorCache(tmp_path), VectorCache(tmp_path)
    theirs.fill(["x", "y"], lambda xs: np.ones((len(xs), 2), dtype=np.float32), chunk=1, desc="t")

    def fail(xs: list[str]) -> np.ndarray:
        raise AssertionError(f"recomputed {xs}")

    assert mine.fill(["y", "x"], fail, chunk=1, desc="t").tolist() == [[1, 1], [1, 1]]


def test_model_key_changes_with_what_changes_scores() -> None:
    assert model_key(CFG) != model_key(ModelConfig(**{**CFG.__dict__, "max_seq_length": 128}))
    assert model_key(CFG) == model_key(ModelConfig(**{**CFG.__dict__, "batch_size": 64}))
    # normalisation happens after the cache: same cached numbers for every score_norm
    assert model_key(CFG) == model_key(ModelConfig(**{**CFG.__dict__, "score_norm": "standardize"}))


# ------------------------------------------------------------------ normalisation (pure, hand-computed)


def test_standardize_hand_computed() -> None:
    # [1, 2, 3]: mean 2, population std sqrt(2/3) = 0.8164966; (x - 2) / 0.8164966 * 0.1
    out = normalize_scores(np.array([1.0, 2.0, 3.0]), "standardize", 0.1)
    assert out.dtype == np.float32
    assert out.tolist() == pytest.approx([-0.1224745, 0.0, 0.1224745], abs=1e-7)
    # [10, 0]: mean 5, std 5 -> [1, -1] * 0.05
    assert normalize_scores(np.array([10.0, 0.0]), "standardize", 0.05).tolist() == pytest.approx([0.05, -0.05])


def test_standardize_ignores_the_teachers_offset_and_spread() -> None:
    """Raw logits (any offset, any spread) and a cosine-like teacher with the same order agree exactly."""
    x = np.array([0.71, 0.52, 0.55, 0.49])
    for a, b in ((1.0, 0.0), (25.0, -7.0), (0.01, 3.0)):
        assert normalize_scores(a * x + b, "standardize", 0.1) == pytest.approx(normalize_scores(x, "standardize", 0.1), abs=1e-6)
    out = normalize_scores(x, "standardize", 0.1)
    assert float(np.std(out)) == pytest.approx(0.1, abs=1e-6) and float(np.mean(out)) == pytest.approx(0.0, abs=1e-7)
    assert list(np.argsort(-out)) == list(np.argsort(-x))  # the order is the teacher's


def test_normalize_edge_cases_and_errors() -> None:
    x = np.array([3.5, -1.25, 8.0])
    assert normalize_scores(x, "none").tolist() == x.tolist()
    assert normalize_scores(np.array([2.0, 2.0, 2.0]), "standardize", 0.1).tolist() == [0.0, 0.0, 0.0]
    assert normalize_scores(np.array([4.0]), "standardize", 0.1).tolist() == [0.0]
    with pytest.raises(ConfigError, match=r"teacher\.score_norm='zscore'"):
        normalize_scores(x, "zscore")
    with pytest.raises(ConfigError, match=r"teacher\.score_scale"):
        normalize_scores(x, "standardize", 0.0)


def test_normalize_groups_per_group() -> None:
    frame = pd.DataFrame({"qid": ["a", "b"], "doc_ids": [["x", "y"], ["x", "y", "z"]], "scores": [[4.0, 2.0], [1.0, 2.0, 3.0]]})
    cfg = ModelConfig(kind="cross_encoder", score_norm="standardize", score_scale=0.1)
    out = normalize_groups(frame, cfg)
    assert out["scores"][0] == pytest.approx([0.1, -0.1])
    assert out["scores"][1] == pytest.approx([-0.1224745, 0.0, 0.1224745], abs=1e-7)
    assert frame["scores"][0] == [4.0, 2.0]  # the input frame is left alone
    assert normalize_groups(frame, ModelConfig())["scores"].tolist() == [[4.0, 2.0], [1.0, 2.0, 3.0]]


# ------------------------------------------------------------------ real teacher: cache and chunked scorer


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> CachedTeacher:
    return CachedTeacher(load_teacher(CFG), tmp_path_factory.mktemp("cache"))


def test_cached_scores_equal_direct_scores(teacher: CachedTeacher) -> None:
    qs = ["How do I read a file?", "How do I read a file?"]
    ps = ["Use open() and read() to read a file's contents.", "The Eiffel tower is in Paris."]
    direct = teacher.teacher.score(qs, ps)
    cached = teacher.score(qs, ps, progress=False)
    assert np.allclose(direct, cached, atol=1e-5)
    assert cached[0] > cached[1]


def test_score_groups_resumes_from_kept_chunks(teacher: CachedTeacher, tmp_path: Path) -> None:
    full = score_groups(GROUPS, QUERIES, DOCS, teacher, tmp_path, "fp", chunk_size=1)
    (folder,) = tmp_path.iterdir()
    parts = sorted(folder.glob("part-*.parquet"))
    assert len(parts) == 3
    assert list(full["doc_ids"].iloc[0]) == ["d1", "d2", "d3"]  # positive first
    assert all(s[0] == max(s) for s in full["scores"])  # the teacher agrees with these positives
    mtimes = {p: p.stat().st_mtime_ns for p in parts}
    parts[2].unlink()  # as if killed before the last chunk
    again = score_groups(GROUPS, QUERIES, DOCS, teacher, tmp_path, "fp", chunk_size=1)
    assert all(p.stat().st_mtime_ns == mtimes[p] for p in parts[:2])  # kept chunks were not redone
    assert np.allclose(np.stack(again["scores"]), np.stack(full["scores"]), atol=1e-6)


def test_chunks_are_keyed_by_the_texts_not_only_the_ids(teacher: CachedTeacher, tmp_path: Path) -> None:
    """Bug: the chunk fingerprint was the negatives file + model key, so new passage texts under the
    same ids (a `data.min_words` change) reused the old scores."""
    first = score_groups(GROUPS, QUERIES, DOCS, teacher, tmp_path, "fp", chunk_size=2)
    rewritten = {**DOCS, "d1": "The Eiffel tower is in Paris."}  # same id, another passage
    second = score_groups(GROUPS, QUERIES, rewritten, teacher, tmp_path, "fp", chunk_size=2)
    assert first["scores"][0][0] != pytest.approx(second["scores"][0][0], abs=1e-3)
    direct = teacher.teacher.score([QUERIES["q1"]], [rewritten["d1"]])
    assert second["scores"][0][0] == pytest.approx(float(direct[0]), abs=1e-5)
    other_query = {**QUERIES, "q2": "sort a dictionary by value"}
    keys = {group_fingerprint(GROUPS, q, d, "fp") for q, d in ((QUERIES, DOCS), (QUERIES, rewritten), (other_query, DOCS))}
    assert len(keys) == 3 and group_fingerprint(GROUPS, QUERIES, DOCS, "other teacher") not in keys
    assert len(list(tmp_path.iterdir())) == 2  # the other inputs' chunks are left alone (another run may use them)


@pytest.mark.slow
def test_score_groups_with_the_passage_matrix(teacher: CachedTeacher, tmp_path: Path) -> None:
    """A bi-encoder teacher: query embedding (cached) . the passage's row of the teacher_corpus matrix."""
    t = teacher.teacher
    assert isinstance(t, BiEncoderTeacher)
    docids = sorted(DOCS)
    view = TeacherCorpus(docids, t.encode_passages([DOCS[d] for d in docids]), {"fingerprint": "v1"})
    got = score_groups(GROUPS, QUERIES, DOCS, teacher, tmp_path, "fp", chunk_size=2, view=view)
    for qid, ids, scores in zip(got["qid"], got["doc_ids"], got["scores"]):
        q = t.encode_queries([QUERIES[qid]])[0]
        assert scores == pytest.approx((view.rows(list(ids)) @ q).tolist(), abs=1e-5)
        assert scores == pytest.approx(t.score([QUERIES[qid]] * len(ids), [DOCS[d] for d in ids]).tolist(), abs=1e-4)
    # another matrix (new corpus texts or teacher) is another chunk folder
    view2 = TeacherCorpus(docids, view.emb[::-1].copy(), {"fingerprint": "v2"})
    other = score_groups(GROUPS, QUERIES, DOCS, teacher, tmp_path, "fp", chunk_size=2, view=view2)
    assert not np.allclose(np.stack(other["scores"]), np.stack(got["scores"]))
    assert len(list(tmp_path.iterdir())) == 2


# ------------------------------------------------------------------ two processes, one cache

WRITER = r"""
import sys, time
from pathlib import Path
import numpy as np
import pandas as pd
from kd.models.teacher_cache import VectorCache
from kd.distill.teacher_scores import score_groups

name, root = sys.argv[1], Path(sys.argv[2])
(root / f"ready-{name}").touch()
while not all((root / f"ready-{n}").exists() for n in ("a", "b")):
    time.sleep(0.005)

def vec(xs):
    time.sleep(0.002)
    return np.array([[len(x), sum(map(ord, x)) % 97] for x in xs], dtype=np.float32)

texts = [f"shared {i}" for i in range(40)] + [f"{name} only {i}" for i in range(40)]
out = VectorCache(root / "vectors").fill(texts, vec, chunk=1, desc=name)
assert np.array_equal(out, vec(texts)), name

class Teacher:
    def score(self, queries, passages, progress=True):
        time.sleep(0.002)
        return np.array([len(q) + len(p) / 100 for q, p in zip(queries, passages)], dtype=np.float32)

n = 30
docs = {f"d{i}": "d" * (i + 1) for i in range(n)}
for qname in ("shared", name):  # one input set both runs score, and one each
    queries = {f"q{i}": f"{qname} {i}" for i in range(n)}
    groups = pd.DataFrame({"qid": list(queries), "pos_id": [f"d{i}" for i in range(n)],
                           "neg_ids": [[f"d{(i + 1) % n}", f"d{(i + 2) % n}"] for i in range(n)]})
    got = score_groups(groups, queries, docs, Teacher(), root / "chunks", "fp", chunk_size=1)
    want = [[len(queries[q]) + len(docs[d]) / 100 for d in [p, *negs]]
            for q, p, negs in zip(groups["qid"], groups["pos_id"], groups["neg_ids"])]
    assert np.allclose(np.stack(got["scores"]), np.array(want, dtype=np.float32)), name
print("ok", name)
"""


def test_two_processes_share_one_cache_safely(tmp_path: Path) -> None:
    """Bug: shards were numbered by a glob count (two writers picked the same name and one shard
    overwrote the other) and each run deleted every other chunk folder (the other run's too)."""
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, name, str(tmp_path)], cwd=ROOT, env=env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        for name in ("a", "b")
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        assert out.startswith("ok")
    fresh = VectorCache(tmp_path / "vectors")  # what a third run would find: every vector, none lost
    names = [f"shared {i}" for i in range(40)] + [f"{n} only {i}" for i in range(40) for n in ("a", "b")]
    assert not fresh.missing(names)
    assert np.array_equal(fresh.get(names), np.array([[len(x), sum(map(ord, x)) % 97] for x in names], dtype=np.float32))
    folders = sorted((tmp_path / "chunks").iterdir())
    assert len(folders) == 3  # shared, a's, b's: nobody deleted another run's chunks
    assert all(len(list(f.glob("part-*.parquet"))) == 30 for f in folders)
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers  # every file arrived by rename


# Both teacher kinds behind one interface

QUERY = "How do I copy a file in Python?"
PARAPHRASE = "What is the way to duplicate a file using Python?"
UNRELATED = "The weather in Paris is sunny and warm today."


def test_bi_encoder_teacher_scores(minilm):
    teacher = BiEncoderTeacher(ModelConfig(model="minilm", batch_size=2, dtype="float32"), model=minilm)
    scores = teacher.score([QUERY, QUERY, QUERY], [PARAPHRASE, UNRELATED, PARAPHRASE])
    assert scores.shape == (3,) and scores.dtype == np.float32
    assert scores[0] > scores[1]
    assert scores[0] == pytest.approx(scores[2], abs=1e-6)  # repeated pairs encoded once, same score
    q, p = encode(minilm, [QUERY, UNRELATED])
    assert scores[1] == pytest.approx(float(q @ p), abs=1e-5)
    bf16 = BiEncoderTeacher(ModelConfig(model="minilm", batch_size=2, dtype="bfloat16"), model=minilm)
    assert bf16.score([QUERY, QUERY], [PARAPHRASE, UNRELATED]) == pytest.approx(scores[:2], abs=5e-3)


@pytest.fixture(scope="module")
def tiny_ce() -> str:
    """The packaged cross-encoder stand-in (built once into .cache/models/, seconds)."""
    return str(tiny_cross_encoder_path())


def _raw_logits(model, pairs: list[tuple[str, str]]) -> np.ndarray:
    """The Hugging Face model's own logits, bypassing sentence-transformers' predict()."""
    import torch

    from kd.models.store import cross_encoder_module

    module = cross_encoder_module(model)
    enc = module.tokenizer([q for q, _ in pairs], [p for _, p in pairs], padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return module.auto_model(**enc).logits.float().numpy()


def test_cross_encoder_teacher_scores_raw_logits(tiny_ce):
    """Bug: CrossEncoder.predict applied a sigmoid, so the student learnt probabilities."""
    cfg = ModelConfig(name="tiny", kind="cross_encoder", model=tiny_ce, max_seq_length=64, batch_size=2, dtype="float32")
    teacher = load_teacher(cfg)
    assert isinstance(teacher, CrossEncoderTeacher)
    scores = teacher.score([QUERY] * 3, [PARAPHRASE, UNRELATED, PARAPHRASE])
    assert scores.shape == (3,) and scores.dtype == np.float32
    assert scores[0] == pytest.approx(scores[2], abs=1e-5)
    assert teacher.model.max_seq_length == 64
    logits = _raw_logits(teacher.model, [(QUERY, PARAPHRASE), (QUERY, UNRELATED)])[:, 0]
    assert scores[:2] == pytest.approx(logits, abs=1e-4)
    assert not np.allclose(scores[:2], 1 / (1 + np.exp(-logits)), atol=1e-3)  # not squashed
    assert scores[0] > scores[1]  # a trained head: the related passage ranks first


def test_two_label_head_scores_relevant_minus_not(tmp_path):
    from sentence_transformers import CrossEncoder

    CrossEncoder(str(minilm_path()), num_labels=2).save(str(tmp_path))  # saved head: not "newly initialised"
    teacher = load_teacher(ModelConfig(kind="cross_encoder", model=str(tmp_path), max_seq_length=64, dtype="float32"))
    logits = _raw_logits(teacher.model, [(QUERY, PARAPHRASE), (QUERY, UNRELATED)])
    assert teacher.score([QUERY] * 2, [PARAPHRASE, UNRELATED]) == pytest.approx(logits[:, 1] - logits[:, 0], abs=1e-4)


def test_e5_prefixes_applied(minilm):
    plain = BiEncoderTeacher(ModelConfig(model="minilm"), model=minilm)
    e5 = BiEncoderTeacher(ModelConfig(model="minilm", query_prefix="query: ", passage_prefix="passage: "), model=minilm)
    assert not np.allclose(plain.encode_queries([QUERY]), e5.encode_queries([QUERY]))
    assert np.allclose(e5.encode_queries([QUERY]), encode(minilm, ["query: " + QUERY]), atol=1e-6)
    assert np.allclose(e5.encode_passages([QUERY]), encode(minilm, ["passage: " + QUERY]), atol=1e-6)


def test_uncached_cross_encoder_teacher_fails_the_same_way():
    cfg = ModelConfig(kind="cross_encoder", model="BAAI/bge-reranker-large")
    with pytest.raises(ModelLoadError, match=r"(?s)'BAAI/bge-reranker-large'.*HF_HUB_OFFLINE=1"):
        load_teacher(cfg)


def test_unknown_teacher_kind():
    with pytest.raises(ModelLoadError, match=r"teacher\.kind='colbert'"):
        load_teacher(ModelConfig(kind="colbert", model="minilm"))


def test_tiny_cross_encoder_ranks_by_overlap(tiny_ce):
    teacher = load_teacher(ModelConfig(kind="cross_encoder", model="tiny_cross_encoder", max_seq_length=64))
    pairs, labels = tiny_cross_encoder_pairs(16, seed=99)  # unseen pairs from the same recipe
    s = teacher.score([q for q, _ in pairs], [d for _, d in pairs]).reshape(-1, 2)
    assert (s[:, 0] > s[:, 1]).mean() >= 0.75, s
    assert untrained_head(teacher.model, tiny_ce) == []


# ------------------------------------------------------------------ the teacher stage's reading and summary


def test_read_groups_names_the_stage_to_run(tmp_path: Path) -> None:
    from kd.distill.teacher_scores import read_groups
    from kd.errors import DataError

    path = tmp_path / "negatives.parquet"
    with pytest.raises(DataError, match=r"not found: run `dvc repro negatives`"):
        read_groups(path)
    GROUPS.iloc[:0].to_parquet(path)
    with pytest.raises(DataError, match=r"is empty: check mining params"):
        read_groups(path)
    GROUPS.to_parquet(path)
    assert read_groups(path)["qid"].tolist() == ["q1", "q2", "q3"]


def test_group_queries_prefer_the_text_each_group_stored() -> None:
    from kd.distill.teacher_scores import group_queries

    assert group_queries(GROUPS, QUERIES) == QUERIES  # no stored text: the training queries
    stored = GROUPS.assign(qid=["q1", "p7", "q3"], query=["How do I read a file?", "a span", "parse json"])
    got = group_queries(stored, QUERIES)
    assert got["q1"] == "How do I read a file?" and got["p7"] == "a span" and got["q2"] == QUERIES["q2"]


def test_describe_by_hand() -> None:
    from kd.distill.teacher_scores import describe

    # margins 0.9 - 0.7 = 0.2 and 0.8 - 0.6 = 0.2; stds 0.1633 and 0.0943
    got = describe(pd.DataFrame({"scores": [[0.9, 0.5, 0.7], [0.8, 0.6, 0.6]]}))
    assert got == "raw positive-vs-hardest margin 0.2000, within-group std 0.1288"
    assert describe(pd.DataFrame({"scores": []})) == "no groups"


def test_load_with_matrix_reads_a_bi_encoders_rows_and_names_the_missing_stage(tmp_path: Path) -> None:
    from kd.errors import ArtifactError
    from kd.models import teacher_corpus
    from kd.models.teacher import load_with_matrix

    docids = sorted(DOCS)
    with pytest.raises(ArtifactError, match="dvc repro teacher_corpus"):
        load_with_matrix(CFG, tmp_path / "missing", docids)
    emb = np.eye(3, 4, dtype=np.float32)
    teacher_corpus.write(tmp_path / "tc", docids, emb, {"model": "minilm"})
    teacher, view = load_with_matrix(CFG, tmp_path / "tc", docids)
    assert isinstance(teacher, BiEncoderTeacher) and view is not None
    assert np.array_equal(view.rows(["d2"]), emb[[1]])
    with pytest.raises(ArtifactError, match="does not match data/corpus.jsonl"):
        load_with_matrix(CFG, tmp_path / "tc", ["d1", "d2"])  # a matrix of another corpus
