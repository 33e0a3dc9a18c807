"""Entry-point wrapper for stage scripts: params in, one-line errors out (no traceback for user errors)."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable

from kd.config import Params
from kd.errors import KDError
from kd.params import load_params


def run_stage(name: str, fn: Callable[[Params], None]) -> None:
    """Run one pipeline stage as a program: load `params.yaml`, seed torch, call `fn(params)`, log the time.

    Hugging Face stays offline unless the environment says otherwise. A `KDError` (bad config, missing
    input, unloadable model) ends the process with exit status 2 and one line naming the stage and the
    fix, instead of a traceback.

    Args:
        name: the stage's name as in dvc.yaml (prefixes every log line).
        fn: the stage's body.

    Example::

        if __name__ == "__main__":
            run_stage("bm25", main)
    """
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
