"""Question-shaped training queries without a generator model: spans cropped from passages, and
headings or API names rewritten as questions.

Inverse-cloze style: a sentence (or a window of words) cut from a passage stands in for a user's
query. No label comes from the crop itself: the teacher ranks the whole corpus for each pseudo-query
(stage `negatives`), so the student learns the teacher's view, not "the source passage is right".

`as_question`: training queries are mostly headings ("Opening network connections") and API names
("Path.glob"), while users ask questions. A template keyed on the query's shape (already a question,
an identifier, a gerund phrase, a noun phrase) gives the same judged query a question's form; the
teacher scores its candidates as for any query, so a clumsy template costs a noisy input, not a
wrong label.
"""

from __future__ import annotations

import random
import re

from kd.data.io import Corpus
from kd.errors import DataError

SENTENCE_END = re.compile(r"(?<=[.?!])\s+")
WH_WORDS = {"how", "what", "why", "when", "where", "which", "who", "can", "does", "is", "should"}
IDENTIFIER = re.compile(r"^[\w.:-]+(\(\))?$")  # one token: flush, Path.glob, --enable-optimizations, STORE_SUBSCR
TEMPLATES = {
    "identifier": ("What does {} do?", "How do I use {}?", "When should I use {}?"),
    "gerund": ("How do I go about {}?", "What should I know about {}?", "Is there a guide to {}?"),
    "phrase": ("What is {}?", "How does {} work?", "Can you explain {}?"),
}


def crop(text: str, min_words: int, max_words: int, rng: random.Random) -> str | None:
    """A random sentence of `min_words..max_words` words, else a random window of words; None if too short."""
    sentences = [s.split() for s in SENTENCE_END.split(text)]
    fitting = [s for s in sentences if min_words <= len(s) <= max_words]
    if fitting:
        return " ".join(rng.choice(fitting))
    words = text.split()
    if len(words) < min_words:
        return None
    n = rng.randint(min_words, min(max_words, len(words)))
    start = rng.randrange(len(words) - n + 1)
    return " ".join(words[start : start + n])


def shape(text: str) -> str:
    """Which template family fits: `question` (left as it is), `identifier`, `gerund` or `phrase`."""
    words = text.split() or [""]
    if text.rstrip().endswith("?") or words[0].lower() in WH_WORDS:
        return "question"
    if len(words) == 1 and IDENTIFIER.match(words[0]) and not words[0].istitle():
        return "identifier"
    if len(words) > 1 and words[0].lower().endswith("ing"):
        return "gerund"
    return "phrase"


def as_question(text: str, rng: random.Random) -> str:
    """`text` in a question's form by a template for its shape (case is kept: both default models
    lowercase their input); a question keeps its words and gains a question mark."""
    body = text.strip().rstrip(".:?")
    kind = shape(body)
    if kind == "question":
        return body + "?"
    return rng.choice(TEMPLATES[kind]).format(body)


def rewrite_as_questions(queries: dict[str, str], share: float, seed: int) -> dict[str, str]:
    """A `share` of `queries` (each drawn independently, reproducibly) rewritten by `as_question`."""
    if not 0.0 <= share <= 1.0:
        raise DataError(f"mining.question_share={share} must lie in [0, 1] (0 = keep queries as they are)")
    rng = random.Random(seed)
    return {q: as_question(t, rng) if rng.random() < share else t for q, t in sorted(queries.items())}


def pseudo_queries(
    corpus: Corpus, exclude: set[str], n: int, min_words: int, max_words: int, seed: int
) -> dict[str, tuple[str, str]]:
    """`n` pseudo-queries `pq:<docid>` -> (text, source docid) from passages outside `exclude`.

    `exclude` holds the passages judged for dev/test queries: their text never becomes a query.
    """
    if not 0 < min_words <= max_words:
        raise DataError(
            f"mining.pseudo_min_words={min_words} must be > 0 and <= mining.pseudo_max_words={max_words}"
        )
    rng = random.Random(seed)
    docids = sorted(set(corpus) - exclude)
    rng.shuffle(docids)
    out: dict[str, tuple[str, str]] = {}
    for d in docids:
        if len(out) >= n:
            break
        text = crop(corpus[d]['text'], min_words, max_words, rng)
        if text:
            out[f"pq:{d}"] = (text, d)
    if n > 0 and not out:
        raise DataError(
            f"no pseudo-queries could be cropped from {len(docids)} passages with "
            f"mining.pseudo_min_words={min_words}: lower it, or set mining.pseudo_queries=0"
        )
    return out
