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


def _python_snippets() -> list[tuple[int, str]]:
    """Every ```python block of the guide, with the line it starts on."""
    text = GUIDE.read_text(encoding="utf-8")
    return [
        (text[: m.start()].count("\n") + 1, m.group(1))
        for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    ]


def test_the_guide_has_snippets():
    assert len(_python_snippets()) >= 6


@pytest.mark.parametrize(("line", "code"), _python_snippets(), ids=[str(n) for n, _ in _python_snippets()])
def test_every_snippet_runs_as_written(line, code, tiny_handle):
    """Each snippet runs on its own, imports included; a test function it defines is run too, on a
    tiny model, so the tutorial's test passes as written."""
    namespace: dict = {"__name__": f"plugins_md_line_{line}"}
    exec(compile(code, f"docs/plugins.md:{line}", "exec"), namespace)
    for name, value in namespace.items():
        if name.startswith("test_") and callable(value):
            value(tiny_handle)
