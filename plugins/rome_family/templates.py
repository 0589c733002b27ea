"""Context templates of ROME and MEMIT: short texts sampled from the model, put before the edit prompt
so that the key and the value are averaged over contexts rather than fit to one exact sentence.

They depend only on the model and the sampling spec, never on the edit, so they are sampled once
with a fixed seed and cached on disk per model fingerprint: every case of every run sees the same
templates, and no run pays for sampling twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from harness.api import ArtifactCache, content_key
from harness_plugins.rome_family.second_moment import sample_texts

if TYPE_CHECKING:
    from harness.api import ModelHandle

#: The reference's openers; the first template is always the bare prompt.
OPENERS = ("The", "Therefore", "Because", "I", "You")
TEMPLATE_SEED = 0
SLOT = "{}"


def context_templates(handle: ModelHandle, spec: Sequence[Sequence[int]]) -> list[str]:
    """`["{}"]` plus, for each `[length, count]` in `spec`, `count` texts of `length` sampled tokens,
    each turned into `"<text>. {}"`."""

    def sample() -> list[str]:
        templates = [SLOT]
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(TEMPLATE_SEED)
            for length, count in spec:
                openers = [OPENERS[i % len(OPENERS)] for i in range(count)]
                for text in sample_texts(handle, openers, max_new_tokens=length, top_k=5):
                    templates.append(text.replace("{", " ").replace("}", " ").strip() + ". " + SLOT)
        return templates

    key = content_key("context-templates", handle.fingerprint(), [list(s) for s in spec], TEMPLATE_SEED)
    return ArtifactCache("templates").get_or_compute(key, sample)


def fill(template: str, prompt: str) -> str:
    """The template with the prompt in its slot (never `str.format`: prompts may hold braces)."""
    return template.replace(SLOT, prompt, 1)
