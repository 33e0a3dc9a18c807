"""Sphinx-built HTML into sections: hand-written pages, then the real python-django-doc package."""

from __future__ import annotations

from pathlib import Path

import pytest

from kd.data.debian import _find_sources, fetch_debian_docs
from kd.data.io import validate
from kd.data.python_docs_faq import build, load
from kd.data.rst import list_pages
from kd.data.sphinx_html import parse_html_page

PAGE = """<html><head><title>x</title><script>var hidden = 1;</script></head><body>
<div class="nav"><a href="../index.html">Home</a> navigation text</div>
<div class="section" id="s-json-mod"><span id="json-mod"></span>
<h1>json &#8212; JSON<a class="headerlink" href="#json-mod">¶</a></h1>
<p>Intro <code>paragraph</code> one.</p>
<div class="section" id="s-encoding-basics"><h2>Encoding basics<a class="headerlink" href="#x">¶</a></h2>
<p>First para.</p>
<table><tr><td>cell one</td><td>cell<br>two</td></tr></table>
<dl class="py function">
<dt class="sig sig-object py" id="json.dumps"><em class="property">classmethod </em>
<code class="sig-prename descclassname"><span class="pre">json.</span></code><code class="sig-name descname"><span class="pre">dumps</span></code>(<em>obj</em>)<a class="reference internal" href="x"><span class="viewcode-link">[source]</span></a><a class="headerlink" href="#json.dumps">¶</a></dt>
<dd><p>Serialize <em>obj</em>.</p></dd></dl>
</div>
<section id="glossary"><h2>Glossary</h2>
<dl class="glossary docutils"><dt id="term-duck">duck-typing<a class="headerlink" href="#term-duck">¶</a></dt>
<dd>A style that does not look at types.</dd></dl>
</section>
</div>
<div class="footer">Copyright text</div>
</body></html>"""


@pytest.fixture(scope="module")
def sections():
    return parse_html_page("library/json", PAGE)


def test_headings_anchors_and_page_title(sections):
    assert [(s.heading, s.anchor) for s in sections] == [
        ("json — JSON", "json-mod"),
        ("Encoding basics", "encoding-basics"),
        ("Glossary", "glossary"),
    ]
    assert {s.page_title for s in sections} == {"json — JSON"}


def test_text_outside_sections_and_scripts_and_permalinks_dropped(sections):
    text = " ".join(b.text for s in sections for b in s.blocks)
    assert "navigation" not in text and "Copyright" not in text and "hidden" not in text
    assert "¶" not in text and "[source]" not in text
    assert [b.text for b in sections[0].blocks] == ["Intro paragraph one."]


def test_api_object_and_glossary_term_tagged(sections):
    blocks = sections[1].blocks
    assert [b.text for b in blocks[:2]] == ["First para.", "cell one cell two"]
    assert (blocks[2].tag, blocks[2].tag_kind) == ("json.dumps", "object")
    assert blocks[2].text == "classmethod json.dumps(obj)"
    assert blocks[3].text == "Serialize obj." and blocks[3].tag is None
    term = sections[2].blocks[0]
    assert (term.tag, term.tag_kind, term.text) == ("duck-typing", "glossary", "duck-typing:")


def write_html_tree(root):
    faq = """<div class="section" id="s-general"><h1>General FAQ</h1>
    <div class="section" id="s-what-is-x"><h2>What is X?</h2><p>X is a framework for tests and more words.</p></div>
    </div>"""
    lib = """<div class="section" id="s-lib"><h1>The lib</h1>
    <div class="section" id="s-reading-archives"><h2>Reading compressed archives</h2><p>Open the archive first, then read.</p></div>
    </div>"""
    (root / "html" / "faq").mkdir(parents=True)
    (root / "html" / "ref").mkdir()
    (root / "html" / "_static").mkdir()
    (root / "html" / "faq" / "general.html").write_text(faq)
    (root / "html" / "ref" / "lib.html").write_text(lib)
    (root / "html" / "_static" / "junk.html").write_text(lib.replace("lib", "junk"))
    return root / "html"


def test_html_only_folder_builds_the_dataset(tmp_path):
    html = write_html_tree(tmp_path / "pkg" / "usr" / "share" / "doc")
    assert _find_sources(tmp_path / "pkg") == html  # no _sources: the folder holding faq/*.html
    assert [name for name, _ in list_pages(html)] == ["faq/general", "ref/lib"]
    ds = load(None, str(html), min_words=3, max_words=20, max_train_queries=None, dev_fraction=0.5)
    validate(ds)
    held_out = {**ds.queries["dev"], **ds.queries["test"]}
    assert list(held_out.values()) == ["What is X?"]
    assert list(ds.queries["train"].values()) == ["Reading compressed archives"]
    assert ds.qrels["train"] == {"sec:ref/lib#reading-archives": {"ref/lib#reading-archives-0": 1}}


def test_reST_wins_over_html_in_one_folder(tmp_path):
    html = write_html_tree(tmp_path)
    (html / "faq" / "general.rst").write_text("General\n=======\n\nWhy?\n----\n\nBecause.\n")
    assert [name for name, _ in list_pages(html)] == ["faq/general"]


@pytest.mark.parametrize(
    ("config", "questions", "passages", "release_notes"),
    [("django_docs_faq", 40, (4000, 8000), "releases/"), ("sqlalchemy_docs_faq", 30, (3000, 6000), "changelog/")],
)
@pytest.mark.slow
def test_docs_package(config: str, questions: int, passages: tuple[int, int], release_notes: str) -> None:
    """A real Debian docs package (HTML only) through the shipped config's exclusions."""
    import yaml

    cfg = yaml.safe_load(Path(f"conf/data/{config}.yaml").read_text())
    sources, version = fetch_debian_docs(cfg["debian_package"])
    ds = build(sources, version, exclude=tuple(cfg["exclude"]), max_train_queries=600)
    validate(ds)
    held_out = {**ds.queries["dev"], **ds.queries["test"]}
    assert len(held_out) >= questions and all(q.endswith("?") for q in held_out.values())
    assert passages[0] < len(ds.corpus) < passages[1]
    assert not any(d.startswith(release_notes) for d in ds.corpus)
    train_pos = {d for docs in ds.qrels["train"].values() for d in docs}
    assert not any(d.startswith("faq/") for d in train_pos)
    assert len(ds.queries["train"]) == 600
    kinds = {q.split(":")[0] for q in ds.queries["train"]}
    assert kinds == {"sec", "obj", "gloss"}
