"""Question-shaped training queries without a generator model: spans cropped from passages.

Inverse-cloze style: a sentence (or a window of words) cut from a passage stands in for a user's
query. No label comes from the crop itself: the teacher ranks the whole corpus for each pseudo-query
(stage `negatives`), so the student learns the teacher's view, not "the source passage is right".
"""

from __future__ import annotations

import random
import re

from kd.data.io import Corpus
from kd.errors import DataError

SENTENCE_END = re.compile(r"(?<=[.?!])\s+")


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
