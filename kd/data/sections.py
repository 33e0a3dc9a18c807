"""What a documentation page parses into, whichever format it came in (reST sources or Sphinx HTML)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass
class Block:
    """A paragraph of cleaned text; `tag` names the API object or glossary term it documents."""

    text: str
    tag: str | None = None
    tag_kind: str | None = None


@dataclass
class Section:
    """One headed section of a documentation page, with its paragraphs in order (`blocks`)."""

    page: str  # e.g. "library/json"
    page_title: str
    heading: str
    anchor: str
    blocks: list[Block] = field(default_factory=list)


def slugify(text: str, limit: int = 60) -> str:
    """A lowercase ASCII id for `text` (runs of anything else become `-`), at most `limit` characters.

    Example::

        >>> slugify("How do I copy a file?")
        'how-do-i-copy-a-file'
    """
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:limit].rstrip("-") or "section"


def unique_anchor(base: str, taken: set[str]) -> str:
    """`base`, or `base-2`, `base-3`... if a section of the page already has it; recorded in `taken`."""
    anchor, n = base, 1
    while anchor in taken:
        n += 1
        anchor = f"{base}-{n}"
    taken.add(anchor)
    return anchor
