"""The student on its serving backend: PyTorch, ONNX Runtime, or ONNX Runtime with int8 quantization.

Selected by `student.backend` (`torch` | `onnx` | `onnx-int8`) for indexing and serving; the ONNX
backends export on first use (`kd.models.onnx_export`). `OnnxQueryEncoder` is the service's fast path for a
few short queries. Threads and CPU flags live in `kd.models.runtime` (`configure_threads` also sizes the ONNX
Runtime sessions that `load_student` creates afterwards); backend names are config vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kd.choices import check_backend
from kd.errors import ModelLoadError
from kd.models.loading import load_bi_encoder, set_max_length
from kd.models.onnx_export import SERVING_FILE, Recipe, default_export_dir, export_onnx, read_marker
from kd.models.runtime import ort_session_options
from kd.models.store import resolve

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


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
    Every backend returns the same `SentenceTransformer` interface, so `kd.models.loading.encode` and the
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
    set_max_length(model, max_seq_length)
    return model


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
        """The fast path for `model`, or None where it would not give `encode`'s numbers exactly.

        It applies to an ONNX-backed model with a fast tokenizer whose modules are the transformer, mean
        pooling and optionally Normalize; inputs are truncated at `model.max_seq_length` (512 if unset).
        """
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


# ---------------------------------------------------------------- query-encode latency


def query_encode_ms(encode_fn: Any, queries: list[str], repeats: int = 100, warmup: int = 5) -> dict[str, float]:
    """Wall time of encoding one query at a time (`repeats` calls, cycling through `queries`), in ms.

    What a search request pays for its query before FAISS: `p50_ms`, `p90_ms` and `mean_ms` over the
    calls after `warmup` untimed ones. Run it with the thread settings the service uses
    (`kd.models.runtime.configure_threads(service.threads)`) and on a quiet machine.
    """
    import time

    if not queries:
        raise ValueError("query_encode_ms needs at least one query")
    for i in range(warmup):
        encode_fn([queries[i % len(queries)]])
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        encode_fn([queries[i % len(queries)]])
        times.append((time.perf_counter() - t0) * 1000.0)
    arr = np.asarray(times)
    return {"p50_ms": float(np.percentile(arr, 50)), "p90_ms": float(np.percentile(arr, 90)), "mean_ms": float(arr.mean())}
