"""The embedded default dataset: the CPython documentation, with the FAQ questions held out as dev and test.

Corpus: every section of every page, chunked into passages of `min_words`..`max_words` words;
title = the page title (never the section heading, which for the FAQ *is* the test query).
Dev and test: each FAQ question heading (split by a stable hash of its id); relevant = the passages of
that question's own answer.
Train/val: from the other pages only — informative section headings (positives: that section's
passages), API objects (`.. function:: json.dumps` -> `json.dumps`, positive: the passage holding
its description) and glossary terms ("What is <term>?"). No FAQ page feeds training, so no held-out
question or answer wording is trained on.

Any Sphinx documentation with `faq/` pages builds the same way, from reST sources or, for packages
that ship only the built site, from its HTML (`kd.data.sphinx_html`; conf/data/django_docs_faq.yaml).
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kd.data.io import Dataset, Qrels, Queries, hash_split
from kd.data.sections import Block, Section, slugify, unique_anchor
from kd.data.sphinx_html import parse_html_page
from kd.errors import DataError

CACHE_DIR = Path(".cache") / "debian"
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
GENERIC_HEADINGS = {
    "introduction", "examples", "example", "overview", "notes", "usage", "basic usage",
    "summary", "see also", "footnotes", "references", "functions", "classes", "constants",
    "exceptions", "module contents", "other changes", "new features", "deprecated", "removed",
}  # fmt: skip


# ---------------------------------------------------------------- sources


def fetch_debian_docs(package: str, cache: Path = CACHE_DIR) -> tuple[Path, str]:
    """`apt-get download` + `dpkg-deb -x` once; return (the `_sources` folder, package version)."""
    target = cache / package
    done = target / ".version"
    if done.exists():
        return _find_sources(target), done.read_text().strip()
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise DataError(
            f"apt-get/dpkg-deb not found, so the Debian package {package} can't be fetched. "
            "Point data.doc_dir at a CPython Doc/ folder instead (`-S data.doc_dir=/path/to/Doc`)."
        )
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            ["apt-get", "download", package], cwd=tmp, capture_output=True, text=True
        )
        debs = list(Path(tmp).glob("*.deb"))
        if proc.returncode != 0 or not debs:
            raise DataError(
                f"`apt-get download {package}` failed: {proc.stderr.strip()[-300:]}. "
                "Run `apt-get update` first, or set data.doc_dir to a local CPython Doc/ folder."
            )
        version = subprocess.run(
            ["dpkg-deb", "-f", str(debs[0]), "Version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=cache))
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(staging)], check=True)
        (staging / ".version").write_text(f"{package} {version}\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return _find_sources(target), done.read_text().strip()


def _find_sources(root: Path) -> Path:
    """The reST `_sources/` folder if the package ships one, else the HTML folder holding `faq/`."""
    hits = sorted(root.rglob("_sources")) or sorted(p.parent.parent for p in root.rglob("faq/*.html"))
    if not hits:
        raise DataError(f"no _sources folder and no faq/*.html under {root}: is this a Sphinx docs package?")
    return hits[0]


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


# ---------------------------------------------------------------- chunking


@dataclass
class Chunked:
    """Sections packed into passages (`chunk_sections`).

    Attributes:
        passages: passage id (`<page>#<anchor>-<n>`) -> `{"title", "text"}`, title = the page title.
        section_docids: (page, anchor) -> the ids of that section's passages.
        tags: (kind, tag, page, passage id) for each API object or glossary term, and the passage that
            documents it.
    """

    passages: dict[str, dict[str, str]]
    section_docids: dict[tuple[str, str], list[str]]  # (page, anchor) -> docids
    tags: list[tuple[str, str, str, str]]  # (kind, tag, page, docid)


def chunk_sections(sections: Iterable[Section], min_words: int, max_words: int) -> Chunked:
    """Greedy paragraph packing into `min_words`..`max_words` word passages, never across sections."""
    out = Chunked({}, {}, [])
    for sec in sections:
        chunks: list[list[str]] = []
        current: list[str] = []
        tagged: list[tuple[int, Block]] = []
        for block in sec.blocks:
            words = block.text.split()
            if block.tag:
                start_chunk = len(chunks) + (1 if len(current) >= max_words else 0)
                if current and len(current) + len(words) > max_words and len(current) >= min_words:
                    start_chunk = len(chunks) + 1
                tagged.append((start_chunk, block))
            if current and len(current) + len(words) > max_words and len(current) >= min_words:
                chunks.append(current)
                current = []
            current.extend(words)
            while len(current) > max_words:
                chunks.append(current[:max_words])
                current = current[max_words:]
        if current:
            # a short tail joins the previous passage only if that stays within max_words
            if chunks and len(current) < min_words // 3 and len(chunks[-1]) + len(current) <= max_words:
                chunks[-1].extend(current)
            else:
                chunks.append(current)
        docids = []
        for n, words in enumerate(chunks):
            docid = f"{sec.page}#{sec.anchor}-{n}"
            out.passages[docid] = {"title": sec.page_title, "text": " ".join(words)}
            docids.append(docid)
        out.section_docids[(sec.page, sec.anchor)] = docids
        for idx, block in tagged:
            if docids and block.tag and block.tag_kind:
                out.tags.append((block.tag_kind, block.tag, sec.page, docids[min(idx, len(docids) - 1)]))
    return out


# ---------------------------------------------------------------- queries


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def build(
    doc_dir: Path,
    source: str,
    *,
    min_words: int = 100,
    max_words: int = 150,
    max_passages: int | None = None,
    max_train_queries: int | None = None,
    max_dev_queries: int | None = None,
    max_test_queries: int | None = None,
    dev_fraction: float = 0.33,
    exclude: tuple[str, ...] = ("whatsnew/",),
    seed: int = 13,
) -> Dataset:
    """The dataset from a Sphinx documentation folder with `faq/` pages (reST sources or built HTML).

    Sections are packed into passages of `min_words`..`max_words` words, never across sections. FAQ
    question headings (ending in "?") are held out, split into dev and test by a stable hash of their ids
    (`dev_fraction` to dev); their relevant passages are their own answer's. Training queries come from the
    other pages only: informative headings, API object names and glossary terms ("What is <term>?"), two
    natural-language queries for each API name, seeded order.

    Args:
        doc_dir: the documentation folder (what `fetch_debian_docs` returns, or `data.doc_dir`).
        source: provenance written to `meta.json` (e.g. `debian:python3.11-doc 3.11.2-6`).
        min_words: shortest passage (`data.min_words`).
        max_words: longest passage (`data.max_words`).
        max_passages: cap the corpus, keeping every judged passage (None: all).
        max_train_queries: training queries kept (None: all).
        max_dev_queries: dev questions kept, sampled with `seed` (None: all).
        max_test_queries: test questions kept, likewise.
        dev_fraction: share of the FAQ questions that go to dev.
        exclude: page path prefixes left out (release notes, generated index pages).
        seed: seed of the training-query order and the samples.

    Raises:
        DataError: bad word bounds, or a folder without FAQ questions.

    Example::

        sources, version = fetch_debian_docs("python3.11-doc")
        ds = build(sources, f"debian:{version}", max_train_queries=600)
    """
    if not 0 < min_words <= max_words:
        raise DataError(f"data.min_words={min_words} must be >0 and <= data.max_words={max_words}")
    sections: list[Section] = []
    for page, path in list_pages(doc_dir):
        if page.startswith(tuple(exclude)):
            continue
        sections.extend(parse_file(page, path))
    chunked = chunk_sections(sections, min_words, max_words)

    # held out (dev + test): FAQ question headings -> passages of their own answer
    test_q: Queries = {}
    test_qrels: Qrels = {}
    for sec in sections:
        docids = chunked.section_docids[(sec.page, sec.anchor)]
        if sec.page.startswith("faq/") and sec.heading.endswith("?") and docids:
            qid = f"faq:{sec.page.removeprefix('faq/')}#{sec.anchor}"
            test_q[qid] = sec.heading
            test_qrels[qid] = {d: 1 for d in docids}
    test_texts = {_norm(t) for t in test_q.values()}
    faq_docids = {d for d in chunked.passages if d.startswith("faq/")}

    # train/val pool: non-FAQ headings, API objects, glossary terms
    pool: dict[str, tuple[str, dict[str, int]]] = {}
    for sec in sections:
        docids = chunked.section_docids[(sec.page, sec.anchor)]
        words = sec.heading.split()
        if (
            sec.page.startswith("faq/")
            or not docids
            or len(words) < 3
            or _norm(sec.heading) in GENERIC_HEADINGS
            or sec.heading == sec.page_title
        ):
            continue
        pool[f"sec:{sec.page}#{sec.anchor}"] = (sec.heading, {d: 1 for d in docids})
    for kind, tag, page, docid in chunked.tags:
        if page.startswith("faq/") or docid in faq_docids:
            continue
        text = f"What is {tag}?" if kind == "glossary" else tag
        qid = f"{'gloss' if kind == 'glossary' else 'obj'}:{page}#{slugify(tag)}"
        if qid not in pool and len(tag) > 1:
            pool[qid] = (text, {docid: 1})
    pool = {q: v for q, v in pool.items() if _norm(v[0]) not in test_texts}

    # two natural-language queries (headings, glossary) for every API-name query
    rng = random.Random(seed)
    natural = sorted(q for q in pool if not q.startswith("obj:"))
    api = sorted(q for q in pool if q.startswith("obj:"))
    rng.shuffle(natural)
    rng.shuffle(api)
    pool_ids = []
    while natural or api:
        pool_ids.extend(natural[:2] + api[:1])
        natural, api = natural[2:], api[1:]
    train_ids = pool_ids if max_train_queries is None else pool_ids[:max_train_queries]
    # the FAQ questions are the held-out set: a stable hash of the id puts about a third in dev
    dev_ids, test_ids = hash_split(set(test_q), dev_fraction)
    if max_dev_queries is not None and max_dev_queries < len(dev_ids):
        dev_ids = sorted(random.Random(seed).sample(dev_ids, max_dev_queries))
    if max_test_queries is not None and max_test_queries < len(test_ids):
        test_ids = sorted(random.Random(seed).sample(test_ids, max_test_queries))

    queries = {
        "train": {q: pool[q][0] for q in train_ids},
        "dev": {q: test_q[q] for q in dev_ids},
        "test": {q: test_q[q] for q in test_ids},
    }
    qrels = {
        "train": {q: pool[q][1] for q in train_ids},
        "dev": {q: test_qrels[q] for q in dev_ids},
        "test": {q: test_qrels[q] for q in test_ids},
    }
    corpus = chunked.passages
    if max_passages is not None and max_passages < len(corpus):
        keep = {d for split in qrels.values() for docs in split.values() for d in docs}
        others = sorted(set(corpus) - keep)
        random.Random(seed).shuffle(others)
        keep |= set(others[: max(0, max_passages - len(keep))])
        corpus = {d: v for d, v in corpus.items() if d in keep}
    meta = {
        "name": "python_docs_faq",
        "source": source,
        "pages": len({s.page for s in sections}),
        "sections": len(sections),
        "min_words": min_words,
        "max_words": max_words,
        "exclude": list(exclude),
        "seed": seed,
        "dev_fraction": dev_fraction,
    }
    return Dataset(corpus, queries, qrels, meta)


def load(debian_package: str | None, doc_dir: str | None, **kwargs: object) -> Dataset:
    """Resolve the doc sources (local folder wins over apt) and build the dataset."""
    if doc_dir:
        path = Path(doc_dir).expanduser()
        return build(path, f"local:{path.resolve()}", **kwargs)  # type: ignore[arg-type]
    if not debian_package:
        raise DataError("set data.debian_package (e.g. python3.11-doc) or data.doc_dir")
    sources, version = fetch_debian_docs(debian_package)
    return build(sources, f"debian:{version}", **kwargs)  # type: ignore[arg-type]
