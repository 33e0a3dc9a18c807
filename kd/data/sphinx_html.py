"""Sphinx-built HTML pages into the same sections as the reST parser, for doc packages that ship no sources.

Debian's python-django-doc, like many `*-doc` packages, ships only the built HTML. Sphinx marks every
section (`<section id>` or `<div class="section" id>` with an `<h1>`..`<h6>`), every API object
(`<dl class="py function">` with a signature `<dt>`) and every glossary term (`<dl class="glossary">`),
so the same queries come out: headings, API names, "What is <term>?", and FAQ question headings.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from kd.data.sections import Block, Section, slugify, unique_anchor

HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
BLOCKS = {"p", "pre", "li", "dt", "dd", "tr", "blockquote", "table", "dl", "ul", "ol"} | HEADINGS
SKIP = {"script", "style", "head"}
OBJECT_KINDS = {
    "function", "method", "class", "exception", "attribute", "data", "decorator", "classmethod",
    "staticmethod", "module", "cmdoption", "envvar", "option", "setting", "templatetag",
    "templatefilter", "django-admin", "django-admin-option", "fieldlookup", "coroutinefunction",
}  # fmt: skip


def _squash(parts: list[str]) -> str:
    return re.sub(r"\s+", " ", "".join(parts)).strip()


class _PageParser(HTMLParser):
    """One pass over a page: text goes to the innermost open section; block ends make paragraphs."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.page = page
        self.sections: list[Section] = []
        self.stack: list[str] = []  # open tags, to know what a closing tag ends
        self.section_depth: list[int] = []  # stack depths of the open section elements
        self.anchor: str | None = None  # id of the innermost section, until its heading arrives
        self.anchors: set[str] = set()  # anchors given so far on this page
        self.heading: list[str] | None = None
        self.skip_depth: int | None = None  # inside a headerlink, script or "[source]" link
        self.para: list[str] = []
        self.dl_kind: list[str | None] = []  # "object" / "glossary" / None per open <dl>
        self.tag: tuple[str, str] | None = None
        self.sig: list[str] | None = None  # prename + name of the current signature

    # -------------------------------------------------------------- helpers
    @property
    def current(self) -> Section | None:
        return self.sections[-1] if self.sections and self.section_depth else None

    def flush(self) -> None:
        text = _squash(self.para).replace("¶", "").strip()
        self.para.clear()
        if text and self.current is not None:
            kind = self.tag[1] if self.tag else None
            self.current.blocks.append(Block(text, self.tag[0] if self.tag else None, kind))
        self.tag = None

    # -------------------------------------------------------------- events
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = set(a.get("class", "").split())
        if tag in {"br", "img", "hr", "meta", "link", "input", "wbr"}:
            if tag == "br" and self.skip_depth is None:
                self.para.append(" ")
            return
        self.stack.append(tag)
        if self.skip_depth is not None:
            return
        if tag in SKIP or (tag == "a" and "headerlink" in classes) or "viewcode-link" in classes:
            self.skip_depth = len(self.stack)
            return
        if tag == "section" or (tag == "div" and "section" in classes):
            self.flush()
            self.section_depth.append(len(self.stack))
            self.anchor = a.get("id", "").removeprefix("s-") or None
        elif tag in HEADINGS and self.section_depth:
            self.flush()
            self.heading = []
        elif tag == "dl":
            self.flush()
            kind = "glossary" if "glossary" in classes else "object" if classes & OBJECT_KINDS else None
            self.dl_kind.append(kind)
        elif tag == "dt" and self.dl_kind and self.dl_kind[-1]:
            self.flush()
            self.sig = []
        elif tag in BLOCKS:
            self.flush()
        elif tag == "code" and self.sig is not None and classes & {"sig-prename", "sig-name"}:
            self.sig.append("\0")  # marks the start of a name part

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.stack:
            return
        depth = len(self.stack) - self.stack[::-1].index(tag)
        del self.stack[depth - 1 :]
        if self.skip_depth is not None:
            if depth <= self.skip_depth:
                self.skip_depth = None
            return
        if self.heading is not None and tag in HEADINGS:
            self._open_section(_squash(self.heading))
            self.heading = None
        elif tag == "dt" and self.sig is not None:
            kind = self.dl_kind[-1] if self.dl_kind else None  # "object" / "glossary" (None: a malformed page)
            text = _squash(self.para)
            name = "".join(part.split("\1", 1)[0] for part in "".join(self.sig).split("\0")[1:]).strip()
            term = text if kind == "glossary" else name or re.split(r"[(\s\[]", text, maxsplit=1)[0]
            self.tag = (term, kind) if term and kind else None
            if kind == "glossary":
                self.para.append(":")
            self.sig = None
            self.flush()
        elif tag == "dl" and self.dl_kind:
            self.flush()
            self.dl_kind.pop()
        elif tag in BLOCKS:
            self.flush()
        elif tag == "code" and self.sig is not None:
            self.sig.append("\1")  # ends a name part (the signature's arguments follow)
        elif tag in {"td", "th"}:
            self.para.append(" ")  # cells of a row are one paragraph, words kept apart
        while self.section_depth and self.section_depth[-1] > len(self.stack):
            self.flush()
            self.section_depth.pop()

    def handle_data(self, data: str) -> None:
        if self.skip_depth is not None:
            return
        if self.heading is not None:
            self.heading.append(data)
        elif self.section_depth:
            self.para.append(data)
            if self.sig is not None:
                self.sig.append(data)

    def _open_section(self, heading: str) -> None:
        heading = heading.replace("¶", "").strip()
        if not heading:
            return
        title = self.sections[0].page_title if self.sections else heading
        anchor = unique_anchor(self.anchor or slugify(heading), self.anchors)
        self.anchor = None
        self.sections.append(Section(self.page, title, heading, anchor))


def parse_html_page(page: str, html: str) -> list[Section]:
    """Sections of one Sphinx HTML page: heading + its own paragraphs (not its subsections')."""
    parser = _PageParser(page)
    parser.feed(html)
    parser.close()
    parser.flush()
    return parser.sections
