"""The error taxonomy of failed edits: the four kinds of the KnowEdit study (Zhang et al. 2024, "A
Comprehensive Study of Knowledge Editing for Large Language Models", Sec. 5, error analysis),
decided by written rules over the edited model's greedy generation for the edit prompt.

The study names the kinds and shows examples; it gives no rule. Ours work on words (lower-cased,
punctuation stripped), comparing the target's n words with the first n words of the generation,
"the answer slot":

1. **meaningless tokens**: the generation is not text: it has no letter or digit, more than half of
   its whitespace-separated pieces are no word (hold no letter or digit), or, with 4 words or more,
   at most 30% of its words are distinct (one token repeated, "rano?rano?rano?rano?").
2. **knowledge-irrelevant generation**: text, but no word of the answer slot is a target word (it
   answers with something else).
3. **partial token replacement**: some target words hold their own place in the slot and another
   word stands where a missing target word belongs ("New York Mets" for "New York Yankees").
4. **missing tokens**: some target words appear, none is replaced in place: target words are left
   out, the rest shifted or the generation ending early ("Messi" for "Lionel Messi").

A generation whose slot is the whole target is no error of these kinds (`TARGET`): the edit failed
only by the run's teacher-forced measure.
"""

from __future__ import annotations

import re

MEANINGLESS = "meaningless tokens"
MISSING = "missing tokens"
IRRELEVANT = "knowledge-irrelevant"
REPLACED = "partial token replacement"
#: The four kinds, in the order of the study's figure.
KINDS = (MEANINGLESS, MISSING, IRRELEVANT, REPLACED)
#: Not an error of the four kinds: the generation starts with the whole target.
TARGET = "target generated"

#: With at least this many words, a generation whose distinct share is at most `MIN_DISTINCT` is
#: one token repeated.
REPEAT_MIN_WORDS = 4
MIN_DISTINCT = 0.3


def words(text: str) -> list[str]:
    """The words of `text`: lower-cased runs of letters and digits (apostrophes inside kept)."""
    return re.findall(r"[^\W_]+(?:'[^\W_]+)*", text.lower())


def _meaningless(generation: str) -> bool:
    pieces, found = generation.split(), words(generation)
    if not found:
        return True
    if sum(1 for p in pieces if not words(p)) > len(pieces) / 2:
        return True
    return len(found) >= REPEAT_MIN_WORDS and len(set(found)) / len(found) <= MIN_DISTINCT


def classify(generation: str, target: str) -> str:
    """The kind of error (`KINDS`) a greedy `generation` after the edit prompt makes for the edit's
    `target`, or `TARGET` when its answer slot is the whole target (rules in the module's text).
    Raises ValueError for a target without a word."""
    wanted = words(target)
    if not wanted:
        raise ValueError(f"target {target!r} has no word to compare with")
    if _meaningless(generation):
        return MEANINGLESS
    slot = words(generation)[: len(wanted)]
    if slot == wanted:
        return TARGET
    if not set(slot) & set(wanted):
        return IRRELEVANT
    in_place = [i for i, w in enumerate(slot) if w == wanted[i]]
    replaced = [i for i, w in enumerate(slot) if w != wanted[i] and w not in wanted]
    if in_place and replaced:
        return REPLACED
    return MISSING
