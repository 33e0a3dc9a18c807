"""Sphinx documentation pages -> sections: titles, headings, anchors and cleaned text blocks.

reST sources (`*.rst`, `_sources/*.rst.txt`) are parsed here; packages that ship only the built site
go through `kd.data.sphinx_html`. The parser knows what the docs corpora need and no more: section
underlines, object directives (`.. function:: json.dumps`), version notes, and inline roles, links and
literals cleaned to plain text.
"""

from __future__ import annotations

import re
from pathlib import Path

from kd.data.sections import Block, Section, slugify, unique_anchor
from kd.data.sphinx_html import parse_html_page
from kd.errors import DataError

HEADING_CHARS = set("=-`:'\"~^_*+#<>.")
OBJECT_DIRECTIVES = {
    "function", "method", "class", "exception", "attribute", "data", "decorator",
    "classmethod", "staticmethod", "module", "opcode", "cmdoption", "envvar", "option",
    "describe", "pdbcommand", "coroutinefunction", "coroutinemethod", "abstractmethod",
}  # fmt: skip
DROP_DIRECTIVES = {
    "toctree", "index", "highlight", "contents", "raw", "image", "figure", "literalinclude",
    "testsetup", "testcleanup", "sectionauthor", "moduleauthor", "currentmodule", "tabularcolumns",
    "include", "only", "productionlist", "audit-event", "audit-event-table", "availability",
    "impl-detail", "rubric", "miscnews", "program", "c:namespace", "default-role",
}  # fmt: skip
VERSION_DIRECTIVES = {"versionadded", "versionchanged", "deprecated", "deprecated-removed"}


def list_pages(doc_dir: Path) -> list[tuple[str, Path]]:
    """(page name, file) for a CPython `Doc/` (`*.rst`), an html `_sources/` (`*.rst.txt`), or, where
    a folder holds no reST, Sphinx-built `*.html` pages (packages that ship only the HTML)."""
    if not doc_dir.is_dir():
        raise DataError(f"data.doc_dir={doc_dir} is not a folder (want CPython's Doc/, _sources/ or Sphinx HTML)")
    pages: dict[str, list[tuple[str, Path]]] = {".rst.txt": [], ".rst": [], ".html": []}
    for path in sorted(doc_dir.rglob("*")):
        rel = path.relative_to(doc_dir).as_posix()
        if rel.startswith(("includes/", "_", "build/", "venv/")) or "/_" in rel:
            continue
        for suffix, found in pages.items():
            if rel.endswith(suffix):
                found.append((rel[: -len(suffix)], path))
                break
    found = pages[".rst.txt"] + pages[".rst"] or pages[".html"]
    if not any(name.startswith("faq/") for name, _ in found):
        raise DataError(f"{doc_dir} has no faq/ pages: point data.doc_dir at a Sphinx docs folder with faq/ (CPython's Doc/)")
    return found


def parse_file(page: str, path: Path) -> list[Section]:
    """Sections of one page, by its format."""
    text = path.read_text(encoding="utf-8", errors="replace")
    return parse_html_page(page, text) if path.suffix == ".html" else parse_page(page, text)


# ---------------------------------------------------------------- reST -> sections

_ROLE = re.compile(r":[\w:+.-]+:`([^`]*)`")
_ANGLE = re.compile(r"^(.*?)\s*<[^<>]*>$", re.S)
_LINK = re.compile(r"`([^`<]*?)\s*<[^`>]*>`__?")
_REF = re.compile(r"`([^`]+)`__?")
_LITERAL = re.compile(r"``(.+?)``")
_EMPH = re.compile(r"(?<![\w*])\*\*?([^*\s][^*]*?)\*\*?(?![\w*])")


def _role_text(m: re.Match[str]) -> str:
    inner = m.group(1)
    angle = _ANGLE.match(inner)
    text = angle.group(1) if angle and angle.group(1) else inner
    return text.lstrip("~!")


def clean_inline(text: str) -> str:
    """reST inline markup to plain text: roles (`:func:`json.dumps`` -> `json.dumps`), links, literals,
    references and emphasis lose their markup, backslashes go, whitespace collapses.

    Example::

        >>> clean_inline("Use :func:`json.dumps` and ``indent``, see `the docs <https://x>`_.")
        'Use json.dumps and indent, see the docs.'
    """
    text = _ROLE.sub(_role_text, text)
    text = _LINK.sub(lambda m: m.group(1), text)
    text = _LITERAL.sub(lambda m: m.group(1), text)
    text = _REF.sub(lambda m: m.group(1), text)
    text = _EMPH.sub(lambda m: m.group(1), text)
    text = text.replace("\\", "")
    return re.sub(r"\s+", " ", text).strip()


def _is_underline(line: str, title: str) -> bool:
    s = line.rstrip()
    return (
        len(s) >= 3
        and len(set(s)) == 1
        and s[0] in HEADING_CHARS
        and len(s) >= len(title.rstrip()) - 1
    )


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def parse_page(page: str, text: str) -> list[Section]:
    """Split a reST page into sections (heading + its own body, not its subsections)."""
    lines = text.expandtabs(4).splitlines()
    sections: list[Section] = []
    body: list[str] = []
    page_title = ""
    current: Section | None = None
    anchors: set[str] = set()
    i = 0

    def close() -> None:
        if current is not None:
            current.blocks = parse_body(body)

    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        overline = _is_underline(line, "") and i + 2 < len(lines) and lines[i + 2].strip()
        if overline and _is_underline(lines[i + 2], lines[i + 1].strip()) and lines[i + 2][0] == line[0]:
            heading, i = lines[i + 1].strip(), i + 3
        elif (
            line.strip()
            and not line.startswith(" ")
            and _is_underline(nxt, line)
            and not _is_underline(line, "")
            and not line.startswith("..")
        ):
            heading, i = line.strip(), i + 2
        else:
            body.append(line)
            i += 1
            continue
        close()
        heading = clean_inline(heading)
        page_title = page_title or heading
        current = Section(page, page_title, heading, unique_anchor(slugify(heading), anchors))
        sections.append(current)
        body = []
    close()
    return sections


def parse_body(lines: list[str]) -> list[Block]:
    """Turn a section body into cleaned paragraphs, tagging API objects and glossary terms."""
    blocks: list[Block] = []
    para: list[str] = []
    tag: tuple[str, str] | None = None
    drop_indent: int | None = None  # inside a dropped directive's content
    glossary_indent: int | None = None
    i = 0

    def flush() -> None:
        nonlocal tag
        text = clean_inline(" ".join(para))
        para.clear()
        if text:
            blocks.append(Block(text, *(tag or (None, None))))
            tag = None

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        ind = _indent(line)
        if drop_indent is not None:
            if stripped and ind <= drop_indent:
                drop_indent = None
            else:
                i += 1
                continue
        if glossary_indent is not None and stripped and ind <= glossary_indent:
            glossary_indent = None
        if not stripped:
            flush()
            i += 1
            continue
        m = re.match(r"\s*\.\.\s+([\w:-]+)::\s*(.*)$", line)
        if m:
            flush()
            name, arg = m.group(1), m.group(2)
            short = name.split(":")[-1]
            while arg.endswith("\\") and i + 1 < len(lines):  # continued signature
                i += 1
                arg = arg[:-1] + " " + lines[i].strip()
            i += 1
            while i < len(lines) and re.match(r"\s+:[\w-]+:", lines[i]):  # directive options
                i += 1
            if name in DROP_DIRECTIVES or short in DROP_DIRECTIVES:
                drop_indent = ind
            elif name == "glossary":
                glossary_indent = ind
            elif short in OBJECT_DIRECTIVES and arg:
                sig = clean_inline(arg)
                obj = re.split(r"[(\s\[]", sig, maxsplit=1)[0]
                tag = (obj, "object")
                para.append(sig)
            elif arg and short not in VERSION_DIRECTIVES:
                para.append(arg)
            continue
        if stripped.startswith(".."):  # comment, label target, substitution
            flush()
            i += 1
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > ind):
                if not lines[i].strip() and i + 1 < len(lines) and _indent(lines[i + 1]) <= ind:
                    break
                i += 1
            continue
        if glossary_indent is not None and ind == glossary_indent + 3 and not stripped.startswith(("*", "-")):
            flush()
            term = clean_inline(stripped)
            tag = (term, "glossary")
            para.append(term + ":")
            i += 1
            continue
        para.append(stripped.removesuffix("::") + (":" if stripped.endswith("::") else ""))
        i += 1
    flush()
    return blocks
