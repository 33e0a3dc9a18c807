"""`python -m service`: validate and load the artifacts, then serve them with uvicorn (one worker).

Loading happens *before* uvicorn starts so that a missing or corrupt artifact ends the process with
one line naming the file and the `dvc repro` stage to run, instead of a lifespan traceback.

Precedence: command-line flag > environment variable > params.yaml (`service.*`) > default.
Environment: KD_SERVICE_HOST, KD_SERVICE_PORT, KD_STUDENT_DIR, KD_INDEX_DIR, KD_PARAMS,
KD_SERVICE_RERANK (0/false/no turns reranking off), KD_STUDENT_MODEL (models:/<name>@<alias>),
KD_TEACHER_CORPUS_DIR, KD_LOG_LEVEL, KD_ACCESS_LOG (1 = one log line per request, with its request id;
off by default, it costs latency). Every log line carries the request id (`[rid]`, "-" outside requests).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from kd import artifacts
from kd.errors import ConfigError, KDError

FALSE = {"0", "false", "no", "off"}
TRUE = {"1", "true", "yes", "on"}


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"environment variable {name}={raw!r} must be an integer port") from exc


def _env_bool(name: str) -> bool | None:
    raw = os.environ.get(name, "").strip().lower()
    if raw == "":
        return None
    if raw in FALSE | TRUE:
        return raw in TRUE
    raise ConfigError(f"environment variable {name}={raw!r} must be one of {sorted(FALSE | TRUE)}")


def _env_path(name: str) -> Path | None:
    raw = os.environ.get(name)
    return Path(raw) if raw else None


LOG_FORMAT = "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"
LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "service.ops.RequestIdFilter"}},
    "formatters": {"plain": {"format": LOG_FORMAT}},
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["request_id"]},
    },
    "loggers": {
        "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
        "service": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m service", description="Serve the distilled student search model.")
    parser.add_argument("--host", default=None, help="bind address (default: service.host, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default: service.port, 8000)")
    parser.add_argument("--student", type=Path, default=None, help="student model folder (default artifacts/student)")
    parser.add_argument("--index", type=Path, default=None, help="index folder (default artifacts/index)")
    parser.add_argument("--params", type=Path, default=None, help="params file (default params.yaml)")
    parser.add_argument(
        "--student-model", default=None, help="serve a registry version: models:/<name>@<alias> (service.student_model)"
    )
    parser.add_argument(
        "--teacher-corpus", type=Path, default=None, help="teacher passage embeddings (service.teacher_corpus_dir)"
    )
    parser.add_argument(
        "--no-rerank", action="store_true", help="do not load the teacher; rerank=true requests get 400"
    )
    parser.add_argument("--log-level", default=None, help="uvicorn log level (default info)")
    parser.add_argument(
        "--access-log", action="store_true", help="log one line per request (off by default: it costs latency)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from kd.params import load_params
        from service.settings import Settings, check_service_config
        from service.startup import load_engine

        params = load_params(args.params or Path(os.environ.get("KD_PARAMS") or "params.yaml"))
        rerank = False if args.no_rerank else _env_bool("KD_SERVICE_RERANK")
        settings = Settings(
            student_dir=args.student or Path(os.environ.get("KD_STUDENT_DIR") or artifacts.STUDENT),
            index_dir=args.index or Path(os.environ.get("KD_INDEX_DIR") or artifacts.INDEX),
            params=params,
            rerank=rerank,
            teacher_corpus_dir=args.teacher_corpus or _env_path("KD_TEACHER_CORPUS_DIR"),
            student_model=args.student_model or os.environ.get("KD_STUDENT_MODEL") or None,
        )
        host = args.host or os.environ.get("KD_SERVICE_HOST") or params.service.host
        port = args.port if args.port is not None else _env_int("KD_SERVICE_PORT")
        port = params.service.port if port is None else port
        access_log = args.access_log or bool(_env_bool("KD_ACCESS_LOG"))
        from service.app import create_app

        check_service_config(settings.service)
        if settings.service.auth == "api_key":  # fail in milliseconds, before the models load
            from service.keys import read_records

            read_records(Path(settings.service.api_keys_file))
        engine = load_engine(settings)
        app = create_app(settings, engine=engine, log_access=access_log)
    except KDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    import uvicorn

    log_level = args.log_level or os.environ.get("KD_LOG_LEVEL") or "info"
    uvicorn.run(app, host=host, port=port, workers=1, log_level=log_level, access_log=False, log_config=LOG_CONFIG)
    return 0


if __name__ == "__main__":
    sys.exit(main())
