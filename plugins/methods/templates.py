"""Context templates of ROME and MEMIT: short texts sampled from the model, put before the edit prompt
so that the key and the value are averaged over contexts rather than fit to one exact sentence.

They depend only on the model and the sampling spec, never on the edit, so they are sampled once
with a fixed seed and cached on disk per model fingerprint: every case of every run sees the same
templates, and no run pays for sampling twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from harness.cache import atomic_write_bytes, cache_dir, content_key
from harness.second_moment import sample_texts

if TYPE_CHECKING:
    from harness.models.handle import ModelHandle

#: The reference's openers; the first template is always the bare prompt.
OPENERS = ("The", "Therefore", "Because", "I", "You")
TEMPLATE_SEED = 0
SLOT = "{}"


def context_templates(handle: ModelHandle, spec: Sequence[Sequence[int]]) -> list[str]:
    """`["{}"]` plus, for each `[length, count]` in `spec`, `count` texts of `length` sampled tokens,
    each turned into `"<text>. {}"`."""
    key = content_key("context-templates", handle.fingerprint(), [list(s) for s in spec], TEMPLATE_SEED)
    path = cache_dir("templates") / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    templates = [SLOT]
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(TEMPLATE_SEED)
        for length, count in spec:
            openers = [OPENERS[i % len(OPENERS)] for i in range(count)]
            for text in sample_texts(handle, openers, max_new_tokens=length, top_k=5):
                templates.append(text.replace("{", " ").replace("}", " ").strip() + ". " + SLOT)
    atomic_write_bytes(path, json.dumps(templates).encode())
    return templates


def fill(template: str, prompt: str) -> str:
    """The template with the prompt in its slot (never `str.format`: prompts may hold braces)."""
    return template.replace(SLOT, prompt, 1)
