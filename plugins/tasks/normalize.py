"""The quirks of published answer fields, undone once so that no metric ever sees them.

KnowEdit answers come as a string, a list of aliases, or a list of alias lists (some of them
empty); group names come as `Reasoning` in one file and `reasoning` in the runner. Here every
answer becomes a flat tuple of non-blank strings in source order (so the first one is the
reference toolkit's "first alias") and every group name becomes snake_case.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from harness.api import Probe

_NON_WORD = re.compile(r"[^0-9a-zA-Z]+")


def flatten_answers(value: Any) -> tuple[str, ...]:
    """Every non-blank answer string, depth first, in source order; duplicates kept once."""
    found: list[str] = []

    def walk(item: Any) -> None:
        if isinstance(item, str):
            if item.strip() and item not in found:
                found.append(item)
        elif isinstance(item, (list, tuple)):
            for inner in item:
                walk(inner)

    walk(value)
    return tuple(found)


def group_name(name: str) -> str:
    """`Subject_Aliasing` -> `subject_aliasing`, `Reasoning` -> `reasoning`, `One Hop` -> `one_hop`."""
    return _NON_WORD.sub("_", name).strip("_").lower()


def probe(prompt: Any, answers: Any) -> Probe | None:
    """A probe, or None when it has no prompt or no answer left after dropping blanks."""
    flat = flatten_answers(answers)
    if not isinstance(prompt, str) or not prompt.strip() or not flat:
        return None
    return Probe(prompt=prompt, answers=flat)


def probes(items: Iterable[Mapping[str, Any]], prompt_key: str = "prompt", answer_key: str = "ground_truth"):
    """The usable probes of a list of `{prompt, ground_truth}` items."""
    made = (probe(item.get(prompt_key), item.get(answer_key)) for item in items)
    return tuple(p for p in made if p is not None)


def probe_groups(raw: Mapping[str, Any] | None) -> dict[str, tuple[Probe, ...]]:
    """KnowEdit `portability` / `locality` objects as canonical groups; empty groups left out.

    Two source names for one group (`Reasoning` and `reasoning`) are merged in source order.
    """
    groups: dict[str, tuple[Probe, ...]] = {}
    for name, items in (raw or {}).items():
        items = [items] if isinstance(items, Mapping) else items
        made = probes(items)
        if made:
            key = group_name(name)
            groups[key] = groups.get(key, ()) + made
    return groups


def add_probes(groups: dict[str, tuple[Probe, ...]], name: str, made: Iterable[Probe | None]) -> None:
    """Append probes to a group in place, leaving the group out when none is usable."""
    kept = tuple(p for p in made if p is not None)
    if kept:
        groups[name] = groups.get(name, ()) + kept


def text_list(value: Any) -> tuple[str, ...]:
    """A string or a list of strings as a tuple of the non-blank ones (rephrases, prompts)."""
    return flatten_answers(value)
