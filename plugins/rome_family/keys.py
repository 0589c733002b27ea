"""Where an edit's subject is, and what a layer reads there: the keys k* of ROME and MEMIT, and the
hidden states MEMIT spreads its residual from.

A key is the MLP down-projection's input at the subject's last token (at the prompt's last token
for a case without a subject, ROME's `fact_token: last`), averaged over the context templates so
that it stands for the subject rather than for one sentence.

Shapes: d_in = MLP inner width (keys), d = hidden size (hidden states), n = edits, T = templates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from harness.api import EditCase, HarnessError, capture_modules, encode_prompts
from harness_plugins.rome_family.templates import SLOT, fill

if TYPE_CHECKING:
    from harness.api import ModelHandle

#: Texts read in one forward pass by `subject_reads` (templates x edits can run into hundreds).
READ_CHUNK = 64


def subject_problem(case: EditCase, method: str) -> str | None:
    """Why `method` cannot key an edit on this case's subject, or None.

    A case without a subject (Sanitation's test questions) is keyed at the prompt's last token,
    ROME's `fact_token: last`; a subject that the prompt does not contain is a data error."""
    if case.subject and case.subject not in case.prompt:
        return (
            f"{method}: case {case.case_id}: field 'subject' ({case.subject!r}) does not occur in "
            f"field 'prompt' ({case.prompt!r})"
        )
    return None


@dataclass(frozen=True)
class Rewrite:
    """One requested edit as ROME and MEMIT see it: a prompt, the subject in it ("" for none), and
    a target."""

    prompt: str
    subject: str
    target: str

    @classmethod
    def of(cls, case: EditCase, method: str) -> Rewrite:
        problem = subject_problem(case, method)
        if problem:
            raise HarnessError(problem)
        return cls(case.prompt, case.subject, case.target_new)

    def subject_end(self, template: str = SLOT) -> int:
        """Character index in `fill(template, prompt)` just past the subject, or past the prompt
        when there is no subject: the edit is keyed at the last token before it."""
        if not self.subject:
            return template.index(SLOT) + len(self.prompt)
        return template.index(SLOT) + self.prompt.index(self.subject) + len(self.subject)


def last_token_before(tokenizer, text: str, char_end: int) -> int:
    """Index of the last token of `text` (encoded as the harness encodes it) that starts before
    `char_end`: the subject's last token when `char_end` is where the subject ends."""
    offsets = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True).offset_mapping
    inside = [i for i, (lo, hi) in enumerate(offsets) if hi > lo and lo < char_end]
    if not inside:
        raise HarnessError(f"no token of {text!r} lies before character {char_end}")
    return inside[-1]


@torch.no_grad()
def read_at(
    handle: ModelHandle, module_name: str, texts: Sequence[str], positions: Sequence[int], what: str
) -> torch.Tensor:
    """A module's input (`what="input"`) or output (`"output"`) at one position per text.
    -> [len(texts), width], float32"""
    batch = encode_prompts(handle.tokenizer, texts, padding_side="right").to(handle.device)
    reading_input = what == "input"
    with capture_modules(handle, [module_name], inputs=reading_input, outputs=not reading_input) as seen:
        handle.model(**batch.model_inputs(), use_cache=False)
    read = (seen.inputs if reading_input else seen.outputs)[module_name][0]  # [len(texts), tokens, width]
    rows = torch.arange(len(texts), device=handle.device)
    return read[rows, torch.tensor(positions, device=handle.device)].float()


def subject_reads(
    handle: ModelHandle, module_name: str, rewrites: Sequence[Rewrite], templates: Sequence[str], what: str
) -> torch.Tensor:
    """A module's input (keys) or output (hidden states) at the subject's last token, averaged over
    the context templates. -> [width, n]"""
    texts, positions = [], []
    for rw in rewrites:
        for template in templates:
            text = fill(template, rw.prompt)
            texts.append(text)
            positions.append(last_token_before(handle.tokenizer, text, rw.subject_end(template)))
    reads = torch.cat(
        [
            read_at(handle, module_name, texts[i : i + READ_CHUNK], positions[i : i + READ_CHUNK], what)
            for i in range(0, len(texts), READ_CHUNK)
        ]
    )  # [n*T, width]
    return reads.view(len(rewrites), len(templates), -1).mean(1).T
