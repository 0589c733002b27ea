"""Fact triples for knowledge locating, from MQuAKE (Zhong et al. 2023, "MQuAKE: Assessing
Knowledge Editing in Language Models via Multi-Hop Questions"): its multi-hop chains give, for a
fact (s, r, o), a related fact (o, r', o'), the chain's next hop, whose subject is the first
fact's object; and the other chains give an unrelated fact of the same subject (s, r'', o'') with
another relation.

A MQuAKE record (the original schema) has `single_hops` [{cloze, answer, ...}] and
`orig.triples_labeled` [[subject, relation, object]] (labels) / `orig.triples` (Wikidata ids),
hop by hop.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.api import HarnessError, read_json
from harness_plugins.rome_family.keys import SubjectError, locate_subject


@dataclass(frozen=True)
class Fact:
    """A cloze prompt and the subject in it."""

    prompt: str
    subject: str


@dataclass(frozen=True)
class FactTriple:
    """A fact, a related fact (the chain's next hop) and an unrelated fact of the same subject."""

    fact: Fact
    related: Fact
    unrelated: Fact


def _hops(record: dict, where: str) -> list[tuple[Fact, str]]:
    """(fact, relation id) per hop of a record."""
    try:
        hops = record["single_hops"]
        labeled = record["orig"]["triples_labeled"]
        ids = record["orig"]["triples"]
        steps = zip(hops, labeled, ids, strict=True)
        return [(Fact(hop["cloze"], label[0]), triple[1]) for hop, label, triple in steps]
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        fields = "single_hops, orig.triples, orig.triples_labeled"
        raise HarnessError(f"{where}: not a MQuAKE record ({fields}): {exc}") from None


def _locates(fact: Fact) -> bool:
    try:
        locate_subject(fact.prompt, fact.subject)
    except SubjectError:
        return False
    return True


def fact_triples(records: Sequence[dict], source: str = "MQuAKE") -> Iterator[FactTriple]:
    """Every (fact, related, unrelated) the records give, at most one per subject, in record
    order; facts whose subject does not occur once in the prompt are passed over."""
    chains = [_hops(r, f"{source}, record {i}") for i, r in enumerate(records)]
    by_subject: dict[str, dict[str, Fact]] = {}
    for chain in chains:
        for fact, relation in chain:
            by_subject.setdefault(fact.subject, {}).setdefault(relation, fact)
    used = set()
    for chain in chains:
        for (fact, relation), (related, _) in itertools.pairwise(chain):
            others = [f for r, f in by_subject[fact.subject].items() if r != relation]
            if fact.subject in used or not others:
                continue
            triple = FactTriple(fact, related, others[0])
            if all(_locates(f) for f in (triple.fact, triple.related, triple.unrelated)):
                used.add(fact.subject)
                yield triple


def read_triples(path: str | Path, count: int) -> list[FactTriple]:
    """The first `count` triples of a MQuAKE JSON file. Raises HarnessError (naming the file and
    record) for a file that is not MQuAKE's."""
    records = read_json(path)
    if not isinstance(records, list):
        raise HarnessError(f"{path}: expected a JSON list of MQuAKE records")
    found = []
    for triple in fact_triples(records, str(path)):
        found.append(triple)
        if len(found) == count:
            break
    return found
