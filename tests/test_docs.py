"""The plugin author's guide documents every hook (with its exact signature) and every public name
of harness.api, each under its own heading; a hook or type added without docs fails here."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from harness import api, hookspecs

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
HEADINGS = set(re.findall(r"^#{2,4} `([^`]+)`\s*$", GUIDE.read_text(encoding="utf-8"), flags=re.MULTILINE))
HOOKS = [
    (name, fn)
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    if hasattr(fn, "knowedit_harness_spec")
]


def test_hookspecs_are_found():
    assert len(HOOKS) >= 5


@pytest.mark.parametrize(("name", "fn"), HOOKS, ids=[name for name, _ in HOOKS])
def test_every_hook_is_documented_with_its_signature(name, fn):
    assert f"{name}{inspect.signature(fn)}" in HEADINGS


@pytest.mark.parametrize("name", api.__all__)
def test_every_public_api_name_is_documented(name):
    assert name in HEADINGS
