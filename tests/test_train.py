"""kd.distill.train on a toy batch: the loss falls and the student moves toward the teacher's order.

The teacher's order is the untrained student's own order reversed, so only real training can
raise the agreement; a `train` that left (or reloaded) the untrained weights fails here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import kendalltau

from kd.config import ComputeConfig, LossConfig, ModelConfig, TrainConfig
from kd.distill.curves import Curves
from kd.distill.dev import dev_evaluator
from kd.distill.losses import combined
from kd.distill.mixing import interpolate_weights, wise_ft
from kd.distill.objective import fit_projection, training_rows
from kd.distill.train import train
from kd.errors import ConfigError, DataError
from kd.models.loading import encode, load_bi_encoder

STUDENT = ModelConfig(name="minilm", model="minilm", max_seq_length=32, batch_size=16, dtype="float32")
TOPICS = [
    ("How do I read a file?", ["open() returns a file object", "files are read with read()", "the weather is warm",
                               "paths join with os.path.join"]),
    ("How do I sort a list?", ["sorted() returns a new list", "list.sort() sorts in place", "the train was late",
                               "dicts keep insertion order"]),
    ("How do I parse JSON?", ["json.loads parses a string", "json.load reads a file", "cats sleep a lot",
                              "regular expressions match text"]),
    ("How do I start a thread?", ["threading.Thread(target=f).start()", "a thread runs a callable",
                                  "bread needs flour", "sockets connect to servers"]),
    ("How do I format a date?", ["datetime.strftime formats dates", "dates print with isoformat()",
                                 "the sea is blue", "integers have no size limit"]),
    ("How do I copy a file?", ["shutil.copy copies a file", "shutil.copy2 keeps metadata", "music is loud",
                               "lambda makes small functions"]),
    ("How do I catch an exception?", ["try/except catches errors", "except Exception as e binds it",
                                      "mountains are tall", "generators yield values"]),
    ("How do I time code?", ["timeit measures small snippets", "time.perf_counter gives a clock",
                             "apples are red", "sets drop duplicates"]),
]  # fmt: skip


def _student_scores(model, queries: list[str], groups: list[list[str]]) -> np.ndarray:
    q = encode(model, queries)
    p = encode(model, [d for g in groups for d in g]).reshape(len(groups), len(groups[0]), -1)
    return np.einsum("bd,bgd->bg", q, p)


def _agreement(student: np.ndarray, teacher: np.ndarray) -> float:
    """Mean Kendall tau between the student's and the teacher's order of each group."""
    return float(np.mean([kendalltau(s, t).statistic for s, t in zip(student, teacher)]))


def _loss(model, queries: list[str], groups: list[list[str]], teacher: np.ndarray, weights: LossConfig) -> float:
    with torch.no_grad():
        q = torch.from_numpy(encode(model, queries))
        p = torch.from_numpy(encode(model, [d for g in groups for d in g]).reshape(len(groups), len(groups[0]), -1))
        total, _ = combined(q, p, torch.from_numpy(teacher).float(), weights)
    return float(total)


@pytest.fixture(scope="module")
def toy() -> tuple[list[str], list[list[str]], np.ndarray]:
    """Queries, groups (teacher's best first) and teacher scores that reverse the untrained student."""
    model = load_bi_encoder("minilm", STUDENT.max_seq_length)
    queries = [q for q, _ in TOPICS]
    before = _student_scores(model, queries, [docs for _, docs in TOPICS])
    groups, teacher = [], []
    for (_, docs), s in zip(TOPICS, before):
        ascending = [docs[i] for i in np.argsort(s)]  # the student's worst first: the teacher's best
        groups.append(ascending)
        teacher.append([0.6, 0.5, 0.4, 0.3])  # cosine-scale scores, strictly decreasing
    return queries, groups, np.array(teacher, dtype=np.float32)


@pytest.mark.slow
def test_train_moves_the_student_toward_the_teacher(toy, tmp_path: Path) -> None:
    queries, groups, teacher = toy
    qids = [f"q{i}" for i in range(len(queries))]
    doc_ids = [[f"q{i}d{j}" for j in range(len(g))] for i, g in enumerate(groups)]
    doc_text = {d: t for ids, g in zip(doc_ids, groups) for d, t in zip(ids, g)}
    scores = pd.DataFrame({"qid": qids, "doc_ids": doc_ids, "scores": teacher.tolist()})
    rows = training_rows(scores, dict(zip(qids, queries)), doc_text, STUDENT)
    qrels = {q: {ids[0]: 1} for q, ids in zip(qids, doc_ids)}  # dev judges by the teacher's top passage
    evaluator = dev_evaluator(dict(zip(qids, queries)), qrels, doc_text, STUDENT)
    loss_cfg = weights = LossConfig(margin_mse=0.6, listwise_kl=0.4, in_batch=0.0)
    cfg = TrainConfig(epochs=2, batch_size=4, learning_rate=2e-4, warmup_ratio=0.0, weight_decay=0.0,
                      max_seq_length=STUDENT.max_seq_length, dtype="float32")  # fmt: skip

    model = load_bi_encoder("minilm", STUDENT.max_seq_length)
    agree_before = _agreement(_student_scores(model, queries, groups), teacher)
    loss_before = _loss(model, queries, groups, teacher, weights)
    assert agree_before == pytest.approx(-1.0)  # by construction

    curves = train(model, rows, evaluator, loss_cfg, cfg, seed=13, work_dir=tmp_path / "work")
    assert isinstance(curves, Curves) and curves.steps and len(curves.epochs) == 1 + cfg.epochs

    agree_after = _agreement(_student_scores(model, queries, groups), teacher)
    loss_after = _loss(model, queries, groups, teacher, weights)
    # measured: loss 5.2 -> 0.14, agreement -1.0 -> 0.83 (2 epochs)
    assert loss_after < 0.5 * loss_before, (loss_before, loss_after)  # the distillation loss falls
    assert agree_after > agree_before + 1.0, (agree_before, agree_after)  # past no-agreement, toward the teacher
    logged = [r["total"] for r in curves.steps]
    assert np.mean(logged[-2:]) < np.mean(logged[:2])  # and the trainer saw it fall


def test_fit_projection_recovers_a_linear_map() -> None:
    rng = np.random.default_rng(0)
    student = rng.normal(size=(50, 4)).astype(np.float32)
    true_w, true_b = rng.normal(size=(4, 6)), rng.normal(size=6)
    proj = fit_projection(student, (student @ true_w + true_b).astype(np.float32))
    assert (proj.in_features, proj.out_features) == (4, 6)
    with torch.no_grad():
        got = proj(torch.from_numpy(student)).numpy()
    np.testing.assert_allclose(got, student @ true_w + true_b, atol=1e-4)
    with pytest.raises(DataError, match="data.max_train_queries"):
        fit_projection(student[:3], student[:3])


@pytest.mark.slow
def test_train_fits_the_embed_projection_with_the_student(toy, tmp_path: Path) -> None:
    # loss.embed only: every text has a fixed random teacher vector in 6 dims; the trainer must
    # optimise the projection (a parameter of the loss, not the model) and the term must fall
    queries, groups, teacher = toy
    qids = [f"q{i}" for i in range(len(queries))]
    doc_ids = [[f"q{i}d{j}" for j in range(len(g))] for i, g in enumerate(groups)]
    doc_text = {d: t for ids, g in zip(doc_ids, groups) for d, t in zip(ids, g)}
    rng = np.random.default_rng(0)
    unit = lambda n: (v := rng.normal(size=(n, 6))) / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    t_q = dict(zip(qids, unit(len(qids)).astype(np.float32)))
    t_doc = dict(zip(doc_text, unit(len(doc_text)).astype(np.float32)))
    scores = pd.DataFrame({"qid": qids, "doc_ids": doc_ids, "scores": teacher.tolist()})
    rows = training_rows(scores, dict(zip(qids, queries)), doc_text, STUDENT, t_q, lambda ids: np.stack([t_doc[d] for d in ids]))
    qrels = {q: {ids[0]: 1} for q, ids in zip(qids, doc_ids)}
    evaluator = dev_evaluator(dict(zip(qids, queries)), qrels, doc_text, STUDENT)
    loss_cfg = LossConfig(margin_mse=0.0, listwise_kl=0.0, in_batch=0.0, embed=1.0)
    cfg = TrainConfig(epochs=3, batch_size=4, learning_rate=1e-3, warmup_ratio=0.0, weight_decay=0.0,
                      max_seq_length=STUDENT.max_seq_length, dtype="float32")  # fmt: skip
    model = load_bi_encoder("minilm", STUDENT.max_seq_length)
    projection = torch.nn.Linear(384, 6)
    start = projection.weight.detach().clone()
    curves = train(model, rows, evaluator, loss_cfg, cfg, seed=13, work_dir=tmp_path / "work", projection=projection)
    assert not torch.equal(projection.weight.detach(), start)  # the map was trained
    logged = [r["embed"] for r in curves.steps]
    assert np.mean(logged[-2:]) < np.mean(logged[:2]), logged


@pytest.fixture
def no_ray_left():
    """Shut down the local Ray this test starts, so later tests start their own."""
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def _toy_run(toy, tmp_path: Path, workers: int):
    queries, groups, teacher = toy
    qids = [f"q{i}" for i in range(len(queries))]
    doc_ids = [[f"q{i}d{j}" for j in range(len(g))] for i, g in enumerate(groups)]
    doc_text = {d: t for ids, g in zip(doc_ids, groups) for d, t in zip(ids, g)}
    scores = pd.DataFrame({"qid": qids, "doc_ids": doc_ids, "scores": teacher.tolist()})
    rows = training_rows(scores, dict(zip(qids, queries)), doc_text, STUDENT)
    qrels = {q: {ids[0]: 1} for q, ids in zip(qids, doc_ids)}
    evaluator = dev_evaluator(dict(zip(qids, queries)), qrels, doc_text, STUDENT)
    # the same global batch (8) and steps either way: 1 worker x 8, or 2 workers x 4
    cfg = TrainConfig(epochs=4, batch_size=8 // workers, learning_rate=2e-4, warmup_ratio=0.0, weight_decay=0.0,
                      max_seq_length=STUDENT.max_seq_length, dtype="float32", workers=workers)  # fmt: skip
    model = load_bi_encoder("minilm", STUDENT.max_seq_length)
    logged: list[tuple[str, int]] = []
    compute = ComputeConfig(backend="ray", num_cpus=2, cpus_per_actor=1, max_retries=0)
    curves = train(model, rows, evaluator, LossConfig(margin_mse=0.6, listwise_kl=0.2, in_batch=0.2), cfg, seed=13,
                   work_dir=tmp_path / f"w{workers}", on_metrics=lambda k, v, s: logged.append((k, s)), compute=compute)  # fmt: skip
    return _agreement(_student_scores(model, queries, groups), teacher), curves, logged


@pytest.mark.slow
@pytest.mark.ray
def test_two_ray_workers_train_like_one(toy, tmp_path: Path, no_ray_left) -> None:
    """train.workers=2: DDP on Ray Train (gloo, 2 CPU workers) gives a trained student, close to 1 worker's."""
    pytest.importorskip("ray", reason='train.workers > 1 needs `pip install -e ".[ray]"`')
    one, _, _ = _toy_run(toy, tmp_path, 1)
    two, curves, logged = _toy_run(toy, tmp_path, 2)
    print(f"agreement with the teacher: 1 worker {one:.3f}, 2 workers {two:.3f}")
    assert two > 0.0, two  # from -1.0 (the untrained order is the teacher's reversed): it learned
    assert abs(two - one) < 0.35, (one, two)  # measured: 0.83 (1 worker) vs 0.79 (2 workers)
    assert len(curves.epochs) == 1 + 4  # rank 0's curves came back ...
    assert curves.steps[-1]["step"] == 4  # one step per epoch: each worker took half of the 8 groups
    assert ("dev_pool_ndcg_at_10", 4) in logged and any(k == "loss_total" for k, _ in logged)  # ... and were logged


def test_workers_must_be_positive(toy, tmp_path: Path) -> None:
    cfg = TrainConfig(workers=0)
    with pytest.raises(ConfigError, match="train.workers=0"):
        train(None, {}, None, LossConfig(), cfg, seed=1, work_dir=tmp_path)


def test_bad_interpolation_fails_before_training(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train.interpolate_grid=\[0.5, -0.1\] must lie in \[0, 1\]"):
        train(None, {}, None, LossConfig(), TrainConfig(interpolate_grid=[0.5, -0.1]), seed=1, work_dir=tmp_path)


def test_interpolate_weights_mixes_floats_and_keeps_integer_buffers() -> None:
    trained = {"w": torch.tensor([1.0, 3.0]), "ids": torch.tensor([5, 6])}
    initial = {"w": torch.tensor([-1.0, 1.0]), "ids": torch.tensor([0, 1])}
    mixed = interpolate_weights(trained, initial, 0.25)
    assert mixed["w"].tolist() == [-0.5, 1.5]  # 0.25 * trained + 0.75 * initial
    assert mixed["ids"].tolist() == [5, 6]
    assert interpolate_weights(trained, initial, 1.0)["w"].tolist() == [1.0, 3.0]
    with pytest.raises(ValueError, match="differ in names"):
        interpolate_weights(trained, {"w": initial["w"]}, 0.5)


@pytest.mark.slow
def test_wise_ft_scores_the_grid_and_leaves_the_chosen_mix(toy) -> None:
    queries, groups, _ = toy
    model = load_bi_encoder("minilm", STUDENT.max_seq_length)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with torch.no_grad():  # a "trained" model: every float weight moved
        for v in model.state_dict().values():
            if v.is_floating_point():
                v.mul_(1.5)
    trained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    seen: list[float] = []

    def evaluator(m) -> dict[str, float]:  # records which weights it was shown (by one tensor's scale)
        name = next(k for k, v in m.state_dict().items() if v.is_floating_point() and v.abs().sum() > 0)
        ratio = float(m.state_dict()[name].abs().sum() / initial[name].abs().sum())
        seen.append(round(ratio, 3))
        return {"dev_cosine_ndcg@10": ratio}

    score, curve = wise_ft(model, initial, evaluator, 0.5, grid=[0.0, 0.25], known={0.0: 0.1, 1.0: 0.9})
    assert [r["interpolate"] for r in curve] == [0.0, 0.25, 0.5, 1.0]
    assert seen == [1.125, 1.25]  # known mixes are not re-scored; 0.25 and 0.5 are, at their own weights
    assert [r["dev_ndcg@10"] for r in curve] == pytest.approx([0.1, 1.125, 1.25, 0.9])
    assert score == pytest.approx(1.25)
    name = next(k for k, v in initial.items() if v.is_floating_point())
    assert torch.allclose(model.state_dict()[name], 0.5 * trained[name] + 0.5 * initial[name])
    with pytest.raises(ConfigError, match=r"train.interpolate=\[1.5\]"):
        wise_ft(model, initial, evaluator, 1.5)


def test_dev_evaluator_scores_at_the_served_length_and_restores_the_training_one() -> None:
    """Passages whose only match sits past the training length: found at the served length, not at 8 tokens."""
    filler = "lorem ipsum dolor sit amet " * 6
    queries = {"q1": "How do I parse JSON?", "q2": "How do I start a thread?"}
    corpus = {
        "json": filler + "json.loads parses a JSON string into Python objects",
        "thread": filler + "threading.Thread(target=f).start() starts a thread",
    }
    qrels = {"q1": {"json": 1}, "q2": {"thread": 1}}
    model = load_bi_encoder("minilm", 8)  # trains at 8 tokens: only the filler survives truncation
    short = dev_evaluator(queries, qrels, corpus, ModelConfig(name="minilm", model="minilm", max_seq_length=8))
    served = dev_evaluator(queries, qrels, corpus, ModelConfig(name="minilm", model="minilm", max_seq_length=128))
    seen: list[int] = []
    model[0].register_forward_pre_hook(lambda mod, args: seen.append(int(mod.max_seq_length)))
    assert served(model)["dev_cosine_mrr@10"] == pytest.approx(1.0)
    assert model.max_seq_length == 8 and seen and set(seen) == {128}
    # at 8 tokens both passages are the same filler: the run is a tie, not both at rank 1
    assert short(model)["dev_cosine_mrr@10"] < 1.0



def test_the_batch_order_follows_the_training_seed(tmp_path):
    """A model without dropout (a static table) trained with two seeds must differ: the trainer's batch sampler
    defaulted to seed 0 for every `train.seed`, so such a model trained identically whatever the seed."""
    from sentence_transformers.evaluation import SentenceEvaluator

    from kd.distill.dev import VAL_METRIC
    from kd.models.student_families import initial_student

    class Flat(SentenceEvaluator):  # type: ignore[misc]
        primary_metric = VAL_METRIC

        def __call__(self, model, *args, **kwargs):  # noqa: ANN001
            return {VAL_METRIC: 0.0}

    static = ModelConfig(model="minilm", kind="static", backend="torch", corpus_backend="torch")
    rng = np.random.default_rng(0)
    n, g, d = 48, 2, 384
    t = rng.normal(size=(n, 1 + g, d)).astype(np.float32)
    t /= np.linalg.norm(t, axis=-1, keepdims=True)
    rows = {"query": [f"how do I use feature {i} of module {i % 7}" for i in range(n)],
            "label": [[0.9, 0.1, *t[i].ravel().tolist()] for i in range(n)]}  # fmt: skip
    weights = []
    for seed in (1, 2):
        model = load_bi_encoder(initial_student(static))
        cfg = TrainConfig(epochs=1, batch_size=8, learning_rate=1e-2, interpolate=1.0)
        train(model, rows, Flat(), LossConfig(embed=1.0), cfg, seed,
              tmp_path / str(seed), teacher_passages=g)  # fmt: skip
        weights.append(model[0].embedding.weight.detach().clone())
    assert not torch.equal(weights[0], weights[1])


def test_training_inputs_name_the_stage_that_writes_a_missing_input(tmp_path: Path) -> None:
    from kd.config import Params
    from kd.distill.inputs import load_training_inputs

    scores, negatives = tmp_path / "teacher_scores.parquet", tmp_path / "negatives.parquet"
    with pytest.raises(DataError, match=r"teacher_scores.parquet not found: run `dvc repro teacher` first"):
        load_training_inputs(Params(), tmp_path / "data", scores, negatives, tmp_path / "teacher_corpus")
    scores.write_bytes(b"")
    with pytest.raises(DataError, match=r"negatives.parquet not found: run `dvc repro negatives` first"):
        load_training_inputs(Params(), tmp_path / "data", scores, negatives, tmp_path / "teacher_corpus")
