"""The docs stay true: docs/configuration.md documents exactly the config keys of kd/config.py (with their
defaults), and every relative link in README.md, bench/README.md and docs/*.md points to a file that exists."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from kd.config import DATA_SOURCES, Params

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DOC = ROOT / "docs" / "configuration.md"
ROW = re.compile(r"^\|\s*`(?P<key>[A-Za-z_][\w.]*)`\s*\|\s*(?P<default>[^|]*?)\s*\|")
FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*(?P<target>\S+)")


def config_keys() -> dict[str, Any]:
    """Every key of the structured config -> its default (`...` where it has none: a required key).

    The data section's keys are the union over the data sources (each source has its own schema)."""
    keys: dict[str, Any] = dict(Params().flat())
    for cls in DATA_SOURCES.values():
        for f in dataclasses.fields(cls):
            keys.setdefault(f"data.{f.name}", ...)
    return keys


def documented_keys(text: str) -> dict[str, tuple[int, str]]:
    """`key -> (line number, default cell)` of every table row that starts with a backticked key."""
    out: dict[str, tuple[int, str]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        m = ROW.match(line)
        if m and m["key"] != "key":
            assert m["key"] not in out, f"docs/configuration.md:{number}: `{m['key']}` is documented twice"
            out[m["key"]] = (number, m["default"])
    return out


def same_value(cell: str, expected: Any) -> bool:
    if not (cell.startswith("`") and cell.endswith("`")):
        return False
    value = yaml.safe_load(cell.strip("`")) if cell.strip("`") else None
    if isinstance(expected, float) and isinstance(value, int | float | str):
        try:
            return math.isclose(float(value), expected)
        except ValueError:
            return False
    if isinstance(expected, str) and value is not None and not isinstance(value, str):
        return str(value) == expected
    return bool(value == expected)


def test_configuration_doc_matches_the_structured_config() -> None:
    documented = documented_keys(CONFIG_DOC.read_text())
    keys = config_keys()
    stale = sorted(set(documented) - set(keys))
    missing = sorted(set(keys) - set(documented))
    assert not stale, "docs/configuration.md documents keys kd/config.py no longer has: " + ", ".join(
        f"{k} (line {documented[k][0]})" for k in stale
    )
    assert not missing, "config keys missing from docs/configuration.md: " + ", ".join(missing)
    wrong = [
        f"{k} (line {documented[k][0]}: {documented[k][1]}, the code says {v!r})"
        for k, v in keys.items()
        if v is not ... and not same_value(documented[k][1], v)
    ]
    assert not wrong, "docs/configuration.md gives defaults the code does not have: " + "; ".join(wrong)


def test_the_check_names_a_stale_and_a_missing_key() -> None:
    """The checks above on a doc with one key too many and one too few."""
    text = CONFIG_DOC.read_text()
    documented = documented_keys(text.replace("`train.epochs`", "`train.num_epochs`"))
    keys = config_keys()
    assert sorted(set(documented) - set(keys)) == ["train.num_epochs"]
    assert sorted(set(keys) - set(documented)) == ["train.epochs"]
    assert same_value("`0.0002`", 2e-4) and same_value("`[bm25]`", ["bm25"]) and same_value("`null`", None)
    assert not same_value("`0.0003`", 2e-4) and not same_value("0.0002", 2e-4)


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def relative_links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every link that is not a URL or a same-page anchor, outside fenced code blocks."""
    out, fenced = [], False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if fenced:
            continue
        targets = [m["target"] for m in LINK.finditer(line)]
        ref = REFERENCE.match(line)
        if ref:
            targets.append(ref["target"])
        for target in targets:
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.I) or target.startswith("#"):
                continue  # http:, https:, mailto: ...; an anchor on this page
            out.append((number, target))
    return out


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_point_to_files(path: Path) -> None:
    broken = [
        f"{path.relative_to(ROOT)}:{number}: {target}"
        for number, target in relative_links(path)
        if not (path.parent / target.split("#", 1)[0]).exists()
    ]
    assert not broken, "links to nothing:\n" + "\n".join(broken)


def test_the_link_check_finds_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    (tmp_path / "here.md").write_text("x")
    page.write_text(
        "[ok](here.md) [anchor](#x) [web](https://example.org) [gone](missing.md#part)\n"
        "```\n[in code](nothing.md)\n```\n[ref]: also-missing.md\n"
    )
    links = relative_links(page)
    assert links == [(1, "here.md"), (1, "missing.md#part"), (5, "also-missing.md")]
    assert [t for _, t in links if not (tmp_path / t.split("#")[0]).exists()] == ["missing.md#part", "also-missing.md"]
