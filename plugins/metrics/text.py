"""Text statistics used by generation metrics. No downloads: the word tokenizer is a regular
expression, not NLTK's punkt models (which the reference needs and never fetches)."""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter

#: A word is a run of letters/digits/underscore, or a single other non-space character
#: (punctuation splits off as NLTK's word_tokenize does; contractions stay one word).
_WORD = re.compile(r"\w+(?:'\w+)*|[^\w\s]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def clean_generation(text: str) -> str:
    """The reference's post-processing of generated text: NFKD, blank lines folded to a space."""
    return unicodedata.normalize("NFKD", text).replace("\n\n", " ").replace("<|endoftext|>", "")


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def ngram_entropy(tokens: list[str], n: int) -> float:
    """Shannon entropy in bits of the empirical n-gram distribution; 0 with fewer than n tokens."""
    grams = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    total = sum(grams.values())
    return -sum(c / total * math.log2(c / total) for c in grams.values()) if total else 0.0


def weighted_ngram_entropy(text: str) -> float:
    """mean(2/3 * H2, 4/3 * H3) over the words of `text`, the KnowEdit fluency formula."""
    tokens = words(clean_generation(text))
    return (2 / 3 * ngram_entropy(tokens, 2) + 4 / 3 * ngram_entropy(tokens, 3)) / 2


def normalize_answer(text: str) -> str:
    """SQuAD-style normalization: lower case, no punctuation, no articles, single spaces."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCT))
    return " ".join(text.split())
