"""IKE and ICE: editing through the prompt, with the weights untouched.

IKE (Zheng et al., "Can we edit factual knowledge by in-context learning?", 2023) puts
demonstrations before every probe: for each train case a "copy" (the new fact restated), an
"update" (a rephrase answered with the new target) and a "retain" (an unrelated probe answered as
before), all in the KnowEdit study's format

    New Fact: {prompt} {target}\\nPrompt: {probe} {answer}\\n\\n

The k demonstrations nearest to the edit (cosine similarity of sentence embeddings, query
`New Fact: {prompt} {target}\\nPrompt: {prompt}\\n\\n`) are used, most similar first, followed by
the edit's own copy demonstration; the edit's context then ends in `New Fact: {prompt}
{target}\\nPrompt: `, and the evaluator appends each probe prompt and answer to it. ICE is the
reference's `use_icl_examples: false`: the same context without demonstrations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from harness.api import AppliedEdit, Capabilities, EditCase, HarnessError, Method, join_prompt_answer

if TYPE_CHECKING:
    from harness.api import ModelHandle
    from harness_plugins.methods.ike_retrieval import DemoIndex


class ContextEdit(AppliedEdit):
    """An edit that is only text before the probes: nothing in the model to undo."""

    def __init__(self, context: str) -> None:
        self.context = context

    def undo(self) -> None:
        """Nothing to restore: the model was never touched."""


def new_fact(case: EditCase) -> str:
    return join_prompt_answer(case.prompt, case.target_new)


def demonstration(fact: str, prompt: str, answer: str) -> str:
    return f"New Fact: {fact}\nPrompt: {join_prompt_answer(prompt, answer)}\n\n"


def fact_prefix(case: EditCase) -> str:
    """What precedes every probe prompt: the new fact, then the probe."""
    return f"New Fact: {new_fact(case)}\nPrompt: "


def train_demonstrations(cases: Sequence[EditCase]) -> list[str]:
    """Copy, update (first rephrase) and retain (first locality probe) demonstrations per train case."""
    sentences = []
    for case in cases:
        fact = new_fact(case)
        sentences.append(demonstration(fact, case.prompt, case.target_new))
        if case.rephrases:
            sentences.append(demonstration(fact, case.rephrases[0], case.target_new))
        probes = [p for group in case.locality.values() for p in group if p.answers]
        if probes:
            sentences.append(demonstration(fact, probes[0].prompt, probes[0].answers[0]))
    return sentences


def _single(name: str, cases: Sequence[EditCase]) -> EditCase:
    if len(cases) != 1:
        raise HarnessError(
            f"{name} edits one case per apply (in-context editing has no batch mode), got {len(cases)}"
        )
    return cases[0]


class ICE(Method):
    name: ClassVar[str] = "ice"
    capabilities: ClassVar[Capabilities] = Capabilities(
        batch=False, sequential=False, needs_training=False, edits_weights=False
    )
    hparams_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {},
    }

    def apply(
        self, handle: ModelHandle, cases: Sequence[EditCase], hparams: Mapping[str, Any]
    ) -> AppliedEdit:
        return ContextEdit(fact_prefix(_single(self.name, cases)))


class IKE(Method):
    name: ClassVar[str] = "ike"
    capabilities: ClassVar[Capabilities] = Capabilities(
        batch=False, sequential=False, needs_training=True, edits_weights=False
    )
    tuning_hint: ClassVar[str] = "k (the demonstrations retrieved per edit)"
    hparams_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "k": {
                "type": "integer",
                "minimum": 0,
                "default": 16,
                "description": "demonstrations retrieved per edit (all there are, if the split has fewer)",
            },
            "sentence_model": {
                "type": "string",
                "default": "all-MiniLM-L6-v2",
                "description": "retrieval encoder: the bundled all-MiniLM-L6-v2, a folder or a hub id",
            },
        },
    }

    def __init__(self) -> None:
        self.index: DemoIndex | None = None

    def fit(self, handle: ModelHandle, train_cases: Sequence[EditCase], hparams: Mapping[str, Any]) -> None:
        from harness_plugins.methods.ike_retrieval import DemoIndex, SentenceEncoder

        encoder = SentenceEncoder(hparams["sentence_model"], handle.device)
        self.index = DemoIndex.build(train_demonstrations(train_cases), encoder)

    def apply(
        self, handle: ModelHandle, cases: Sequence[EditCase], hparams: Mapping[str, Any]
    ) -> AppliedEdit:
        case = _single(self.name, cases)
        if self.index is None:
            raise HarnessError(
                "ike retrieves demonstrations from a train split: call fit() with one before apply()"
            )
        query = f"New Fact: {new_fact(case)}\nPrompt: {case.prompt}\n\n"
        demos = self.index.nearest(query, hparams["k"])
        own = demonstration(new_fact(case), case.prompt, case.target_new)
        return ContextEdit("".join([*demos, own]) + fact_prefix(case))
