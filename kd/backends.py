"""Fast CPU student backends: PyTorch, ONNX Runtime, and ONNX Runtime with int8 dynamic quantization.

Selected by `student.backend` (`torch` | `onnx` | `onnx-int8`) for indexing and serving. The ONNX
variants are exported offline from a trained sentence-transformers folder (e.g. `artifacts/student`)
into a separate folder, never into the checkpoint itself (a DVC out, or the packaged model inside
site-packages):

    <export dir>/                 a complete sentence-transformers folder (tokenizer, pooling, ...)
        onnx/model.onnx                       backend `onnx`
        onnx/model_qint8_<cpu config>.onnx    backend `onnx-int8` (the float model is not kept)
        kd_export.json                        what it was exported from (content fingerprint)

An export is atomic (temp folder beside the target, then rename), serialised across processes by a
lock file, and reused as long as the checkpoint's content fingerprint is unchanged — so a `dvc
checkout` of another student (which may restore *older* mtimes) still triggers a fresh export.

Threads and CPU flags live in `kd.runtime` (`configure_threads` also sizes the ONNX Runtime sessions
that `load_student` creates afterwards); the backend names are config vocabulary (`kd.config`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np

from kd.atomic import atomic_dir
from kd.config import check_backend
from kd.errors import ConfigError, ModelLoadError
from kd.model_store import model_fingerprint, resolve
from kd.models import load_bi_encoder
from kd.paths import cache_dir
from kd.runtime import QUANT_CONFIGS, QuantConfig, ort_session_options, package_versions, pick_quant_config

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

Recipe = Literal["accurate", "full"]

MARKER: Final = "kd_export.json"
FLOAT_FILE: Final = "onnx/model.onnx"  # the plain export (what int8 quantizes; node names intact)
SERVING_FILE: Final = "onnx/model_opt.onnx"  # backend `onnx`: FLOAT_FILE graph-optimized for CPU (O3)
EXPORT_FORMAT: Final = 3  # bump to invalidate every existing export
RECIPES: Final[tuple[str, ...]] = ("accurate", "full")
# Recipe "accurate" (the default) keeps in float the MatMuls that dynamic int8 hurts most: attention's
# activation x activation products (scores and context: both operands quantized on the fly, softmax
# probabilities squeezed into u8) and each layer's FFN output projection (its input, the GELU output,
# is long-tailed, so a per-tensor u8 range clips it). On MiniLM that roughly halves the cosine error
# to PyTorch at a small speed cost. "full" quantizes every supported op (the sentence-transformers
# default): fastest and smallest, least accurate. Node names follow the BERT-family ONNX export.
KEEP_FLOAT_PATTERNS: Final = (
    re.compile(r"/attention/self/MatMul(_\d+)?$"),
    re.compile(r"/layer\.\d+/output/dense/MatMul$"),
)


# ---------------------------------------------------------------- export


def onnx_file_name(quantize: bool, quant_config: str | None = None, recipe: str = "accurate") -> str:
    if not quantize:
        return SERVING_FILE
    return f"onnx/model_{_quant_suffix(quant_config or pick_quant_config(), recipe)}.onnx"


def _quant_suffix(quant_config: str, recipe: str) -> str:
    return f"qint8_{quant_config}" + ("" if recipe == "accurate" else f"_{recipe}")


def quantization_config(quant_config: str, recipe: str, onnx_path: Path) -> tuple[Any, list[str]]:
    """optimum's dynamic QuantizationConfig for `quant_config` and `recipe`, and the nodes kept in float."""
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    make = getattr(AutoQuantizationConfig, quant_config)
    if recipe == "full":
        return make(is_static=False), []
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    keep = [n.name for n in graph.node if n.op_type == "MatMul" and any(p.search(n.name) for p in KEEP_FLOAT_PATTERNS)]
    if not keep:
        logger.warning("int8 recipe 'accurate': no attention/FFN-output MatMul found by name in %s; "
                       "quantizing every MatMul", onnx_path)  # fmt: skip
    return make(is_static=False, nodes_to_exclude=keep, operators_to_quantize=["MatMul"]), keep


def read_marker(out_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((out_dir / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def is_fresh(out_dir: Path, source_fingerprint: str, file_name: str) -> bool:
    """The export in `out_dir` exists, is complete, and was made from this exact checkpoint."""
    marker = read_marker(out_dir)
    return (
        marker is not None
        and marker.get("format") == EXPORT_FORMAT
        and marker.get("fingerprint") == source_fingerprint
        and marker.get("file_name") == file_name
        and (out_dir / file_name).is_file()
        and (out_dir / "modules.json").is_file()
    )


@contextlib.contextmanager
def _export_lock(out_dir: Path) -> Iterator[None]:
    """An exclusive lock file beside `out_dir`, so two processes never export the same folder at once."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out_dir.parent / f".{out_dir.name}.lock"
    with lock_path.open("a+") as fh:
        try:
            import fcntl
        except ImportError:  # Windows: no cross-process lock; the export is still atomic
            yield
            return
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _quiet_logger(name: str, level: int) -> Iterator[None]:
    """Raise logger `name` ("" = the root logger) to at least `level` for the block."""
    target = logging.getLogger(name or None)
    before = target.level
    target.setLevel(max(before, level))
    try:
        yield
    finally:
        target.setLevel(before)


def export_onnx(
    student_dir: Path | str,
    out_dir: Path | str,
    quantize: bool = False,
    quant_config: QuantConfig | None = None,
    float_export: Path | str | None = None,
    recipe: Recipe = "accurate",
) -> Path:
    """Export a sentence-transformers folder to ONNX (optionally int8-quantized) in `out_dir`; return it.

    Idempotent: an export made from the same checkpoint content is reused (nothing is written).
    Atomic: built in a temp folder beside `out_dir`, then renamed into place. Load the result with
    `load_student` (or `SentenceTransformer(out_dir, backend="onnx", model_kwargs={"file_name": ...})`
    with the `file_name` recorded in `out_dir/kd_export.json`).

    `float_export`: a float `onnx` export of the same checkpoint; when it is fresh, the int8 export
    quantizes a copy of it instead of exporting from PyTorch again (about half the time).
    `quant_config`: the CPU's int8 scheme (default: `pick_quant_config()`); `recipe`: which ops to
    quantize ("accurate" or "full", see KEEP_FLOAT_PATTERNS).
    """
    from sentence_transformers import SentenceTransformer

    src = Path(student_dir).expanduser()
    out = Path(out_dir).expanduser()
    if not (src / "modules.json").is_file():
        raise ModelLoadError(f"{src} is not a sentence-transformers folder (no modules.json): nothing to export")
    if out.resolve() == src.resolve():
        raise ConfigError(f"export folder {out} must differ from the checkpoint folder {src}")
    qc: str | None = None
    if quantize:
        qc = quant_config or pick_quant_config()
        if qc not in QUANT_CONFIGS:
            raise ConfigError(f"int8 quantization config {qc!r} is unknown: use one of {', '.join(QUANT_CONFIGS)}")
        if recipe not in RECIPES:
            raise ConfigError(f"int8 recipe {recipe!r} is unknown: use one of {', '.join(RECIPES)}")
    file_name = onnx_file_name(quantize, qc, recipe)
    fp = model_fingerprint(src)
    if is_fresh(out, fp, file_name):
        return out
    with _export_lock(out):
        if is_fresh(out, fp, file_name):  # another process finished it while we waited
            return out
        started = time.perf_counter()
        logger.info("exporting %s to ONNX%s in %s", src, f" (int8, {qc}, {recipe})" if qc else "", out)
        with atomic_dir(out) as tmp:
            reuse = Path(float_export) if float_export is not None else None
            if qc is not None and reuse is not None and is_fresh(reuse, fp, SERVING_FILE) and (reuse / FLOAT_FILE).is_file():
                shutil.copytree(reuse, tmp, dirs_exist_ok=True)
                (tmp / MARKER).unlink()
                (tmp / SERVING_FILE).unlink()
            else:
                try:
                    with _quiet_logger("sentence_transformers.backend", logging.ERROR):  # "save it" advice: we do
                        model = SentenceTransformer(
                            str(src), device="cpu", backend="onnx", model_kwargs={"export": True}
                        )
                except Exception as exc:  # noqa: BLE001 - corrupt weights, bad config: one message
                    raise ModelLoadError(
                        f"could not export {src} to ONNX ({type(exc).__name__}: {str(exc)[:200]})"
                    ) from exc
                model.save(str(tmp))
                del model
            if not (tmp / FLOAT_FILE).is_file():
                raise ModelLoadError(f"ONNX export of {src} wrote no {FLOAT_FILE}")
            kept_float: list[str] = []
            optimization = None
            if qc is None:
                optimization = _optimize_for_cpu(tmp)
            else:
                from sentence_transformers.backend import export_dynamic_quantized_onnx_model

                float_model = SentenceTransformer(
                    str(tmp), device="cpu", backend="onnx", model_kwargs={"file_name": FLOAT_FILE}
                )
                config, kept_float = quantization_config(qc, recipe, tmp / FLOAT_FILE)
                with _quiet_logger("", logging.WARNING):  # the quantizer logs an INFO line per tensor on the root
                    export_dynamic_quantized_onnx_model(
                        float_model, config, str(tmp), file_suffix=_quant_suffix(qc, recipe)
                    )
                del float_model
                if not (tmp / file_name).is_file():
                    raise ModelLoadError(f"int8 quantization of {src} wrote no {file_name}")
                (tmp / FLOAT_FILE).unlink()  # one .onnx per folder: no ambiguity when loading
                for extra in (tmp / "onnx").glob("*.onnx_data"):
                    extra.unlink()
            marker = {
                "format": EXPORT_FORMAT,
                "source": str(src.resolve()),
                "fingerprint": fp,
                "file_name": file_name,
                "quantize": quantize,
                "quant_config": qc,
                "recipe": recipe if qc else None,
                "kept_float": kept_float,
                "optimization": optimization,
                "versions": package_versions(),
                "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        logger.info("exported %s in %.1f s", out / file_name, time.perf_counter() - started)
    return out


def _optimize_for_cpu(folder: Path) -> str | None:
    """Write SERVING_FILE: FLOAT_FILE with ONNX Runtime's transformer fusions (optimum level O3:
    fused attention, LayerNorm, GELU approximation); returns "O3", or None where the architecture
    has no optimizer and SERVING_FILE is a plain copy.

    On MiniLM, batch-1 query latency at 2 threads 3.81 -> 3.18 ms, cosine to the plain export
    >= 1 - 1e-6. Node names change, which is why int8 quantizes FLOAT_FILE instead.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.backend import export_optimized_onnx_model

    try:
        model = SentenceTransformer(str(folder), device="cpu", backend="onnx", model_kwargs={"file_name": FLOAT_FILE})
        with _quiet_logger("", logging.WARNING):
            export_optimized_onnx_model(model, "O3", str(folder), file_suffix="O3")
        (folder / "onnx" / "model_O3.onnx").replace(folder / SERVING_FILE)
        return "O3"
    except Exception as exc:  # noqa: BLE001 - an architecture the optimizer does not know: serve the plain graph
        logger.warning("ONNX O3 optimization failed (%s: %s); serving the plain export", type(exc).__name__, exc)
        shutil.copyfile(folder / FLOAT_FILE, folder / SERVING_FILE)
        return None


def default_export_dir(student_dir: Path | str, backend: str, recipe: str = "accurate") -> Path:
    """`<cache>/onnx/<folder name>-<hash of its absolute path>-<backend>[-<recipe>]` (git-ignored)."""

    src = Path(student_dir).expanduser().resolve()
    tag = hashlib.sha1(str(src).encode()).hexdigest()[:10]
    suffix = f"-{recipe}" if backend == "onnx-int8" and recipe != "accurate" else ""
    return cache_dir() / "onnx" / f"{src.name}-{tag}-{check_backend(backend)}{suffix}"


# ---------------------------------------------------------------- load


def load_student(
    student_dir: Path | str,
    backend: str = "torch",
    max_seq_length: int | None = None,
    export_dir: Path | str | None = None,
    threads: int | None = None,
    recipe: Recipe = "accurate",
) -> SentenceTransformer:
    """The student on the chosen backend; `onnx`/`onnx-int8` export on first use (then reuse it).

    `student_dir`: a sentence-transformers folder or a packaged name (`minilm`). `export_dir`
    defaults to `default_export_dir(student_dir, backend)`. `threads`: ONNX Runtime intra-op threads
    (default: what `configure_threads` set, else ONNX Runtime's own default, one per physical core);
    the torch backend uses torch's process-wide setting (`configure_threads`) instead.
    `recipe`: for `onnx-int8`, which ops are quantized (see `export_onnx`).
    Every backend returns the same `SentenceTransformer` interface, so `kd.models.encode` and the
    service's `Engine` need no change.
    """

    kind = check_backend(backend)
    if kind == "torch":
        return load_bi_encoder(str(student_dir), max_seq_length)
    from sentence_transformers import SentenceTransformer

    src = Path(resolve(str(student_dir)))
    if not src.is_dir():
        raise ModelLoadError(f"student {student_dir!r} is not a local folder: the ONNX backends need one to export")
    out = Path(export_dir) if export_dir is not None else default_export_dir(src, kind, recipe)
    if kind == "onnx-int8":
        float_dir = default_export_dir(src, "onnx") if export_dir is None else None
        export_onnx(src, out, quantize=True, float_export=float_dir, recipe=recipe)
    else:
        export_onnx(src, out)
    marker = read_marker(out) or {}
    file_name = str(marker.get("file_name") or SERVING_FILE)
    try:
        model = SentenceTransformer(
            str(out),
            device="cpu",
            backend="onnx",
            model_kwargs={
                "file_name": file_name,
                "provider": "CPUExecutionProvider",
                "session_options": ort_session_options(threads),
            },
        )
    except Exception as exc:  # noqa: BLE001 - a broken export: say where and how to redo it
        raise ModelLoadError(
            f"could not load the {kind} export in {out} ({type(exc).__name__}: {str(exc)[:200]}); "
            f"delete {out} to export it again"
        ) from exc
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return model


def clear_export(out_dir: Path | str) -> None:
    """Delete an export folder (the next `load_student` exports again)."""
    shutil.rmtree(Path(out_dir), ignore_errors=True)


# ---------------------------------------------------------------- serving fast path


class OnnxQueryEncoder:
    """Encode a few short queries straight through the tokenizer and the ONNX Runtime session.

    `SentenceTransformer.encode` wraps the ~3 ms forward pass of a short query in ~1 ms of Python
    (module chain, torch <-> numpy copies, length sorting), and the transformers tokenizer call adds
    another ~1 ms of its own; a search service pays that on every request. This does the same maths —
    the module's Rust tokenizer with its truncation and padding, mean pooling over the attention mask, L2 normalisation
    (the service and the index always normalise) — in numpy on the session's output. `from_model`
    returns None for any layout it would not reproduce exactly (torch backend, other pooling, extra
    modules), so callers fall back to `encode`; tests check the two agree.
    """

    def __init__(self, tokenizer: Any, session: Any, max_length: int) -> None:
        from tokenizers import Tokenizer

        # the Rust tokenizer alone, set once to what the `tokenizer(...)` call below would set on every
        # call (~1 ms of Python per request); a copy, so the shared model's tokenizer is left as it is
        self.fast = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self.fast.enable_truncation(max_length, strategy="longest_first", direction=tokenizer.truncation_side)
        self.fast.enable_padding(direction=tokenizer.padding_side, pad_id=tokenizer.pad_token_id,
                                 pad_type_id=tokenizer.pad_token_type_id, pad_token=tokenizer.pad_token)  # fmt: skip
        self.session = session
        self.max_length = max_length
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_name = session.get_outputs()[0].name

    @classmethod
    def from_model(cls, model: SentenceTransformer) -> OnnxQueryEncoder | None:
        from sentence_transformers.models import Normalize, Pooling

        modules = list(model)
        session = getattr(getattr(modules[0], "auto_model", None), "session", None) if modules else None
        tokenizer = getattr(modules[0], "tokenizer", None) if modules else None
        if session is None or tokenizer is None or not getattr(tokenizer, "is_fast", False) or len(modules) not in (2, 3):
            return None
        pooling = modules[1]
        if not isinstance(pooling, Pooling) or pooling.get_config_dict().get("pooling_mode") != "mean":
            return None
        if len(modules) == 3 and not isinstance(modules[2], Normalize):
            return None
        return cls(tokenizer, session, int(model.max_seq_length or 512))

    def __call__(self, texts: list[str]) -> np.ndarray:
        """float32 [len(texts), dim], as `model.encode(texts, normalize_embeddings=True)` would give."""
        encs = self.fast.encode_batch([t.strip() for t in texts])  # sentence-transformers strips input text
        feats = {
            "input_ids": np.array([e.ids for e in encs], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int64),
        }
        inputs = {name: feats[name] for name in self.input_names}
        (tokens,) = self.session.run([self.output_name], inputs)
        mask = inputs["attention_mask"][..., None].astype(np.float32)
        emb = (tokens * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(emb, dtype=np.float32)
