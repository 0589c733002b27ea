"""Where an edit's subject is, and what a layer reads there: the keys k* of ROME and MEMIT, and the
hidden states MEMIT spreads its residual from.

A key is the MLP down-projection's input at the subject's last token (at the prompt's last token
for a case without a subject, ROME's `fact_token: last`), averaged over the context templates so
that it stands for the subject rather than for one sentence. Where the subject is, `locate_subject`
alone decides, for the check before a run (`subject_problem`, `subject_note`) and for the keys.

Shapes: d_in = MLP inner width (keys), d = hidden size (hidden states), n = edits, T = templates.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from harness.api import EditCase, HarnessError, capture_modules, encode_prompts, trim_prompt
from harness_plugins.rome_family.templates import SLOT, fill

if TYPE_CHECKING:
    from harness.api import ModelHandle

#: Texts read in one forward pass by `subject_reads` (templates x edits can run into hundreds).
READ_CHUNK = 64


class SubjectError(HarnessError):
    """A subject that does not locate the edit in its prompt: blank, absent, or ambiguous."""


@dataclass(frozen=True)
class SubjectSpan:
    """Where a subject is in its prompt: characters [start, end) of the prompt.

    `given` is the subject as the case writes it; `prompt[start:end]` is the same name as the prompt
    writes it, which may differ in letter case or Unicode normal form (`exact` says whether they
    are identical). A case without a subject has the empty span at the prompt's end.
    """

    start: int
    end: int
    given: str
    exact: bool


def _caseless(text: str) -> str:
    """Unicode's canonical caseless form (NFD, case fold, then NFC to compare composed text)."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", text).casefold())


def _caseless_spans(prompt: str, subject: str) -> list[tuple[int, int]]:
    """Every [start, end) of `prompt` whose caseless form equals the subject's.

    The subject is found in the caseless form of the whole prompt, and each place is mapped back
    to prompt characters through the clean cuts: the indices i at which the caseless form of
    `prompt[:i]` is a prefix of that of the prompt. A cut inside a character and its combining
    marks is never clean, so a span neither starts nor stops there ("Ame" is not found in a
    decomposed "Amélie"). Cost: one normalization per prompt prefix, paid only when the exact
    search failed and the subject occurs caselessly.
    """
    key, whole = _caseless(subject), _caseless(prompt)
    if key not in whole:
        return []
    cuts: dict[int, int] = {}  # position in `whole` -> index in `prompt`
    for i in range(len(prompt) + 1):
        head = _caseless(prompt[:i])
        if whole.startswith(head):
            cuts.setdefault(len(head), i)
    spans = []
    for at in _occurrences(whole, key):
        if at in cuts and at + len(key) in cuts:
            spans.append((cuts[at], cuts[at + len(key)]))
    return spans


def _occurrences(text: str, part: str) -> list[int]:
    """Every index at which `part` occurs in `text`, overlapping occurrences included."""
    found, at = [], text.find(part)
    while at >= 0:
        found.append(at)
        at = text.find(part, at + 1)
    return found


def _combining_at(text: str, index: int) -> bool:
    """Whether `text[index]` is a combining mark: a span ending there would cut a character off its
    accent."""
    return index < len(text) and unicodedata.combining(text[index]) > 0


def _shown(text: str) -> str:
    """`text` quoted, with its code points spelt out too when it holds non-ASCII characters (two
    spellings of one accented name look alike)."""
    return repr(text) if text.isascii() else f"{text!r} (code points {text!a})"


def locate_subject(prompt: str, subject: str) -> SubjectSpan:
    """Where `subject` is in `prompt`, found as a reader would find it: the one exact occurrence,
    else the one occurrence that differs only in letter case or Unicode normal form (NFC/NFD of an
    accented name). Spaces around the subject are not part of it.

    The empty subject (a format without one, e.g. Sanitation's test questions) locates the empty
    span at the prompt's end: the edit is keyed at the prompt's last token, ROME's `fact_token:
    last`. This one function decides where ROME and MEMIT key an edit, and whether they can
    (`subject_problem`, asked before any model loads).

    Raises SubjectError for a blank subject (spaces only: no token to key at), a subject the prompt
    does not contain, and one it contains more than once (which occurrence the edit means is
    unknown; the reference toolkit fails there too).
    """
    if not subject:
        return SubjectSpan(len(prompt), len(prompt), subject, exact=True)
    name = subject.strip()
    if not name:
        raise SubjectError(f"field 'subject' is blank ({subject!r}): there is no token to key the edit at")
    ends_whole = [at for at in _occurrences(prompt, name) if not _combining_at(prompt, at + len(name))]
    spans = [(at, at + len(name)) for at in ends_whole] or _caseless_spans(prompt, name)
    if not spans:
        raise SubjectError(
            f"field 'subject' ({_shown(name)}) does not occur in field 'prompt' ({_shown(prompt)}), not even "
            f"ignoring letter case and Unicode normal form"
        )
    if len(spans) > 1:
        found = ", ".join(repr(prompt[a:b]) + f" at character {a}" for a, b in spans)
        raise SubjectError(
            f"field 'subject' ({name!r}) occurs {len(spans)} times in field 'prompt' ({prompt!r}): {found}; "
            f"which one the edit means is ambiguous, so write the prompt with the subject once"
        )
    ((start, end),) = spans
    return SubjectSpan(start, end, subject, exact=prompt[start:end] == subject)


def _refusal(case: EditCase, method: str, error: SubjectError) -> str:
    return f"{method}: case {case.case_id}: {error}"


def subject_problem(case: EditCase, method: str) -> str | None:
    """Why `method` cannot key an edit on this case's subject (`locate_subject` refuses it), or
    None."""
    try:
        locate_subject(case.prompt, case.subject)
    except SubjectError as exc:
        return _refusal(case, method, exc)
    return None


def subject_note(case: EditCase) -> str | None:
    """How the subject was located when the prompt writes it differently from the case, or None:
    what a reader of the results should be told (a refused subject has no note)."""
    try:
        span = locate_subject(case.prompt, case.subject)
    except SubjectError:
        return None
    if span.exact:
        return None
    return f"subject {_shown(span.given)} located as {_shown(case.prompt[span.start : span.end])}"


@dataclass(frozen=True)
class Rewrite:
    """One requested edit as ROME and MEMIT see it: a prompt, the subject in it, and a target.

    `subject` is located in `prompt` on construction (`locate_subject`, which raises SubjectError)
    and then held as the prompt writes it ("" for none), so that every later use (the key's token,
    the KL prompt "{subject} is a") reads the prompt's own text.
    """

    prompt: str
    subject: str
    target: str
    span: SubjectSpan = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        span = locate_subject(self.prompt, self.subject)
        object.__setattr__(self, "span", span)
        object.__setattr__(self, "subject", self.prompt[span.start : span.end])

    @classmethod
    def of(cls, case: EditCase, method: str) -> Rewrite:
        """The case's rewrite, on the prompt as the model reads it (`trim_prompt`: character
        positions then match the tokens of `encode_answers` and `encode_prompts`); raises
        HarnessError naming the method and case when its subject does not locate the edit."""
        try:
            return cls(trim_prompt(case.prompt), case.subject, case.target_new)
        except SubjectError as exc:
            raise HarnessError(_refusal(case, method, exc)) from None

    def subject_end(self, template: str = SLOT) -> int:
        """Character index in `fill(template, prompt)` just past the subject, or past the prompt
        when there is no subject: the edit is keyed at the last token before it."""
        return template.index(SLOT) + self.span.end


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
    """A module's input (`what="input"`) or output (`"output"`) at one position per text; the pass
    stops at the module (the layers above it are not run). -> [len(texts), width], float32"""
    batch = encode_prompts(handle.tokenizer, texts, padding_side="right").to(handle.device)
    reading_input = what == "input"
    with capture_modules(
        handle, [module_name], inputs=reading_input, outputs=not reading_input, stop_early=True
    ) as seen:
        seen.forward(**batch.model_inputs(), use_cache=False)
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
