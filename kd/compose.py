"""Compose `conf/` into the params dict exactly as `dvc exp run` does.

`python -m kd.compose [overrides...]` prints it; redirect to params.yaml after editing conf/.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def compose(overrides: list[str] | None = None, conf_dir: Path = CONF_DIR) -> dict[str, Any]:
    """The params Hydra composes from `conf/` with `overrides`: what `dvc exp run -S ...` writes to params.yaml.

    Args:
        overrides: Hydra overrides, e.g. `["student=e5_small_v2", "loss.margin_mse=0.8", "+experiment=smoke"]`.
        conf_dir: the folder holding `config.yaml` and the groups.

    Returns:
        The composed, resolved params as plain dicts and lists (interpolations such as
        `${teacher.smoke_model}` resolved).

    Example::

        >>> compose(["train.epochs=2"])["train"]["epochs"]
        2
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(conf_dir.resolve()), version_base=None):
        cfg = hydra_compose(config_name="config", overrides=overrides or [])
    out = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(out, dict)
    return {str(k): v for k, v in out.items()}


def main() -> None:
    """`python -m kd.compose [OVERRIDE ...] > params.yaml`: the composition as YAML on stdout."""
    import yaml

    sys.stdout.write(yaml.safe_dump(compose(sys.argv[1:]), sort_keys=False))


if __name__ == "__main__":
    main()
