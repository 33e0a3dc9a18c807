"""Load the student from the MLflow model registry: `models:/<name>@<alias>` (or `models:/<name>/<version>`).

`kd.tracking.register_student` logs the trained student as a sentence-transformers MLflow model;
here the service resolves the URI to one version, downloads it once into the cache and hands back
the sentence-transformers folder inside. Every failure is a ConfigError naming the URI and the fix.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from kd.errors import ConfigError
from service.schemas import RegistryInfo

log = logging.getLogger("service")

URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w\-]+)|/(?P<version>\d+))$")
ST_FOLDER = "model.sentence_transformer"  # where mlflow.sentence_transformers keeps the model
FIX = (
    "register a version with the train stage (kd.tracking.register_student), then set the alias: "
    "`python -c \"from mlflow import MlflowClient; MlflowClient().set_registered_model_alias('{name}', '{alias}', "
    "'<version>')\"`; or set service.student_model: null to serve artifacts/student"
)


def is_registry_uri(value: str | None) -> bool:
    return bool(value) and str(value).startswith("models:/")


def parse(uri: str) -> tuple[str, str | None, str | None]:
    """(name, alias, version) of a `models:/` URI; ConfigError for anything else."""
    m = URI.match(uri.strip())
    if not m:
        raise ConfigError(
            f"service.student_model={uri!r} is not a registry URI: use models:/<name>@<alias> "
            "(for example models:/kd-student@production) or models:/<name>/<version>"
        )
    return m["name"], m["alias"], m["version"]


def fetch(uri: str, cache: Path, tracking_uri: str) -> tuple[Path, RegistryInfo]:
    """Resolve `uri` to a version, download it into `cache/<name>/<version>` (once), return the model folder."""
    name, alias, version = parse(uri)
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, str(version))
    except MlflowException as exc:
        what = f"alias @{alias}" if alias else f"version {version}"
        raise ConfigError(
            f"service.student_model={uri!r}: the registry at {tracking_uri} has no {what} of model {name!r} "
            f"({exc.error_code}): " + FIX.format(name=name, alias=alias or "production")
        ) from exc
    dest = cache / name / f"{mv.version}-{(mv.run_id or 'norun')[:12]}"  # a fresh registry reuses version numbers
    folder = dest / ST_FOLDER
    if not (folder / "modules.json").is_file():
        dest.mkdir(parents=True, exist_ok=True)
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{mv.version}", dst_path=str(dest))
        except MlflowException as exc:
            raise ConfigError(f"service.student_model={uri!r}: could not download version {mv.version}: {exc}") from exc
    if not (folder / "modules.json").is_file():
        raise ConfigError(
            f"service.student_model={uri!r}: version {mv.version} holds no {ST_FOLDER}/ folder (not logged with "
            "kd.tracking.register_student?): register the student again"
        )
    log.info("student from the registry: %s -> version %s", uri, mv.version)
    return folder, RegistryInfo(uri=uri, name=name, version=str(mv.version), alias=alias, run_id=mv.run_id)
