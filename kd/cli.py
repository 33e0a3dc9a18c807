"""Entry-point wrapper for stage scripts: params in, one-line errors out (no traceback for user errors)."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable

from kd.config import Params, load_params
from kd.errors import KDError


def run_stage(name: str, fn: Callable[[Params], None]) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format=f"[{name}] %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    started = time.perf_counter()
    try:
        params = load_params()
        import torch

        torch.manual_seed(params.seed)
        fn(params)
    except KDError as exc:
        print(f"error in stage '{name}': {exc}", file=sys.stderr)
        sys.exit(2)
    logging.getLogger().info("done in %.1f s", time.perf_counter() - started)
