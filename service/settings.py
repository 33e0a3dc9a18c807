"""The service's settings: where the artifacts are, which params apply, and the `service.*` checks.

`Settings` is what `create_app` and `load_engine` take; `check_service_config` refuses a config the
service cannot run with a ConfigError naming the key; `limits` is what /ready reports of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kd import artifacts
from kd.config import Params, ServiceConfig
from kd.errors import ConfigError
from service.schemas import Limits

AUTH_MODES = ("none", "api_key")


@dataclass(frozen=True)
class Settings:
    """Where the artifacts are and which params apply. `None` fields defer to `service.*` in params."""

    student_dir: Path = artifacts.STUDENT
    index_dir: Path = artifacts.INDEX
    params: Params = field(default_factory=Params)
    rerank: bool | None = None
    teacher_corpus_dir: Path | None = None
    student_model: str | None = None  # models:/<name>@<alias>; overrides service.student_model

    @property
    def service(self) -> ServiceConfig:
        return self.params.service

    @property
    def rerank_enabled(self) -> bool:
        return self.params.service.rerank if self.rerank is None else self.rerank

    @property
    def teacher_corpus_path(self) -> Path:
        if self.teacher_corpus_dir is not None:
            return self.teacher_corpus_dir
        configured = Path(self.params.service.teacher_corpus_dir)
        # a relative path sits beside the index's artifacts/ folder (the same checkout), not the cwd
        return configured if configured.is_absolute() else self.index_dir.parent.parent / configured

    @property
    def registry_uri(self) -> str | None:
        return self.student_model or self.params.service.student_model or None


def check_service_config(cfg: ServiceConfig) -> None:
    """Config values the service cannot work with: a ConfigError naming the key and the fix."""
    if cfg.auth not in AUTH_MODES:
        raise ConfigError(f"service.auth={cfg.auth!r} is unknown: use one of {', '.join(AUTH_MODES)} (conf/service/)")
    positive = (
        "max_query_chars", "max_k", "max_rerank_depth", "max_batch", "max_body_bytes", "max_rerank_pairs",
        "max_scored_pairs", "max_concurrent_reranks", "search_workers", "retry_after_s", "max_encode_texts",
        "max_encode_chars",
    )  # fmt: skip
    for key in positive:
        value = getattr(cfg, key)
        if value < 1:
            raise ConfigError(f"service.{key}={value} must be >= 1 (conf/service/, or -S service.{key}=...)")
    for key in ("rate_limit_per_minute", "rate_limit_burst"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"service.{key}={getattr(cfg, key)} must be >= 0 (0 = off / automatic)")
    if not 0 <= cfg.rerank_nice <= 19:
        raise ConfigError(f"service.rerank_nice={cfg.rerank_nice} must lie in 0..19 (0 = reranks as urgent as plain searches)")
    if cfg.max_rerank_depth > cfg.max_rerank_pairs:
        raise ConfigError(
            f"service.max_rerank_depth={cfg.max_rerank_depth} exceeds service.max_rerank_pairs={cfg.max_rerank_pairs}: "
            "one query at full depth would be refused; raise max_rerank_pairs or lower max_rerank_depth"
        )


def limits(svc: ServiceConfig) -> Limits:
    return Limits(
        max_query_chars=svc.max_query_chars,
        max_k=svc.max_k,
        max_rerank_depth=svc.max_rerank_depth,
        max_batch=svc.max_batch,
        max_body_bytes=svc.max_body_bytes,
        max_rerank_pairs=svc.max_rerank_pairs,
        max_scored_pairs=svc.max_scored_pairs,
        max_concurrent_reranks=svc.max_concurrent_reranks,
        max_encode_texts=svc.max_encode_texts,
        max_encode_chars=svc.max_encode_chars,
        rate_limit_per_minute=svc.rate_limit_per_minute,
    )
