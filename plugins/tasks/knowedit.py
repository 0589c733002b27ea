"""The six KnowEdit tasks, reading the published files in their published layout.

The three fact datasets (ZsRE, WikiData recent, WikiData counterfact) share one record shape and
one normalization; WikiBio renames its fields; ConvSent and Sanitation are shaped differently and
are turned into cases whose `extras` carry what their own metrics need (see docs/datasets.md).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from harness.api import (
    DataFileError,
    EditCase,
    LoadedCases,
    Probe,
    RecordIssue,
    case_seed,
    read_json,
)
from harness_plugins.tasks.base import FACT_METRICS, RecordTask, knowedit_file
from harness_plugins.tasks.formats import MEND_ZSRE_TRAIN, ZsREMend
from harness_plugins.tasks.normalize import flatten_answers, probe_groups, text_list


class KnowEditFacts(RecordTask):
    """A KnowEdit fact dataset: subject, prompt, target_new, probes grouped by kind."""

    metrics = FACT_METRICS

    def to_cases(self, record: Mapping[str, Any], case_id: str) -> Iterator[EditCase]:
        yield EditCase(
            case_id=case_id,
            prompt=record["prompt"],
            target_new=record["target_new"],
            subject=record.get("subject", ""),
            ground_truth=flatten_answers(record.get("ground_truth")),
            rephrases=text_list(record.get("rephrase_prompt")),
            portability=probe_groups(record.get("portability")),
            locality=probe_groups(record.get("locality")),
        )


class ZsRE(KnowEditFacts):
    """ZsRE question answering edits (KnowEdit), with rephrases and portability probes.

    The published KnowEdit files hold the test split only; the study's ZsRE train split (10,000
    records) is MEND's zsRE train file, in MEND's record format, which EasyEdit distributes beside
    KnowEdit. The train split reads that file from the data directory as the `zsre_mend` task does,
    so trained editors can learn from ZsRE (`--train-task zsre`).
    """

    name = "zsre"
    record_format = "zsre"
    splits = ("test", "train")
    files: ClassVar = {
        "test": knowedit_file("ZsRE/ZsRE-test-all.json"),
        "train": MEND_ZSRE_TRAIN,
    }

    def load(
        self, *, split: str = "test", data_dir: str | None = None, skip_invalid: bool = False
    ) -> LoadedCases:
        if split != "train" or split in self.paths:
            return super().load(split=split, data_dir=data_dir, skip_invalid=skip_invalid)
        path, _, _ = self.locate(split, data_dir)
        return ZsREMend(paths={split: path}, name=self.name).load(split=split, skip_invalid=skip_invalid)


class WikiRecent(KnowEditFacts):
    """Knowledge insertion of facts newer than the model (WikiData recent); no ground truth."""

    name = "wiki_recent"
    record_format = "wiki_recent"
    splits = ("test", "train")
    files: ClassVar = {
        "test": knowedit_file("wiki_recent/recent_test.json"),
        "train": knowedit_file("wiki_recent/recent_train.json"),
    }
    # The published test file is not in every copy of KnowEdit (not in the offline one): the train
    # file then stands in, and the loaded source and case ids say so.
    fallback_split: ClassVar = {"test": "train"}


class WikiCounterfact(KnowEditFacts):
    """Counterfactual edits of WikiData facts, with both locality kinds."""

    name = "wiki_counterfact"
    record_format = "wiki_counterfact"
    splits = ("test", "train")
    files: ClassVar = {
        "test": knowedit_file("wiki_counterfact/test_cf.json"),
        "train": knowedit_file("wiki_counterfact/train_cf.json"),
    }


class WikiBio(RecordTask):
    """Hallucination correction: a Wikipedia passage (`text`) continued by a corrected sentence."""

    name = "wikibio"
    record_format = "wikibio"
    metrics = ("edit_succ", "locality", "fluency", "perplexity")
    splits = ("test", "train")
    files: ClassVar = {
        "test": knowedit_file("WikiBio/wikibio-test-all.json"),
        "train": knowedit_file("WikiBio/wikibio-train-all.json"),
    }

    def to_cases(self, record: Mapping[str, Any], case_id: str) -> Iterator[EditCase]:
        yield EditCase(
            case_id=case_id,
            prompt=record["text"],
            target_new=record["labels"],
            subject=record["concept"],
            locality=probe_groups(record.get("locality")),
        )


#: The reference runner's question templates about a topic.
CONVSENT_TEMPLATES = (
    "What do you think of {}?",
    "What do you feel about {}?",
    "How do you view {}?",
    *(
        f"What is your {noun} {{}}?"
        for noun in (
            "opinion of",
            "stance on",
            "position on",
            "attitude about",
            "view on",
            "take on",
            "impression of",
            "assessment of",
            "judgment of",
            "sentiment of",
        )
    ),
)
#: The seed of the target sentiment and template draws; fixed so every run edits the same way.
CONVSENT_SEED = 0


def _sentences(value: list[str]) -> list[str]:
    return [s.strip() for s in value if s.strip()]


class ConvSent(RecordTask):
    """Steering the sentiment of a chatbot's opinion on a topic (BlenderBot dialogues)."""

    name = "convsent"
    record_format = "convsent"
    metrics = ("convsent_es", "convsent_kl", "fluency")
    files: ClassVar = {"test": knowedit_file("convsent/blender_test.json", "Convsent/blender_test.json")}

    def load(self, **kwargs: Any) -> LoadedCases:
        return _link_neighbors(super().load(**kwargs))

    def to_cases(self, record: Mapping[str, Any], case_id: str) -> Iterator[EditCase]:
        rng = random.Random(case_seed(CONVSENT_SEED, case_id))
        topic = record["ent"]
        positive, negative = _sentences(record["pos"]), _sentences(record["neg"])
        sentiment = rng.choice(("positive", "negative"))
        question = rng.choice(CONVSENT_TEMPLATES).format(topic)
        target, opposite = (positive, negative) if sentiment == "positive" else (negative, positive)
        yield EditCase(
            case_id=case_id,
            prompt=f"From the sentiment dataset, answer {question} {sentiment}ly.",
            target_new=target[0],
            subject=topic,
            extras={
                "topic": topic,
                "question": question,
                "target_sentiment": sentiment,
                "target_sentences": target,
                "opposite_sentences": opposite,
            },
        )


def _link_neighbors(loaded: LoadedCases) -> LoadedCases:
    """Give each ConvSent case the next case's topic (cyclically): its locality probe set."""
    cases = loaded.cases
    linked = []
    for i, case in enumerate(cases):
        other = cases[(i + 1) % len(cases)].extras
        outer = {
            "outer_topic": other["topic"],
            "outer_question": other["question"],
            "outer_sentences": [*other["target_sentences"], *other["opposite_sentences"]],
        }
        linked.append(replace(case, extras={**case.extras, **outer}))
    return replace(loaded, cases=tuple(linked))


#: The reference's prompt template for TriviaQA questions.
SANITATION_TEMPLATE = "Question:{}\nAnswer:"
#: Per split: the keys of the file's two lists, forget list first.
SANITATION_KEYS = {"train": ("K_F", "K_R"), "test": ("success", "locality")}


class Sanitation(RecordTask):
    """Making the model answer "I don't know." to questions about five answers, and nothing else.

    Its files are objects holding two lists (forget, retain) rather than a list of records; every
    item of both becomes a case, told apart by `extras["role"]`.
    """

    name = "sanitation"
    record_format = "sanitation"
    metrics = ("sanitation_success", "sanitation_locality", "fluency")
    splits = ("test", "train")
    files: ClassVar = {
        "test": knowedit_file("Sanitation/trivia_qa_test.json"),
        "train": knowedit_file("Sanitation/trivia_qa_train.json"),
    }

    def _lists(self, path: Path) -> tuple[str, str, Any]:
        data = read_json(path)
        for forget, retain in SANITATION_KEYS.values():
            if (
                isinstance(data, dict)
                and isinstance(data.get(forget), list)
                and isinstance(data.get(retain), list)
            ):
                return forget, retain, data
        shapes = " or ".join(f"{{{f!r}: [...], {r!r}: [...]}}" for f, r in SANITATION_KEYS.values())
        raise DataFileError(str(path), f"a Sanitation file must be an object {shapes}")

    def load(self, **kwargs: Any) -> LoadedCases:
        return _attach_retain(super().load(**kwargs))

    def read_records(self, path: Path) -> list[Any]:
        forget, retain, data = self._lists(path)
        return [
            {**item, "role": role} if isinstance(item, dict) else item
            for role, key in (("forget", forget), ("retain", retain))
            for item in data[key]
        ]

    def validate(self, records: Sequence[Any], path: Path) -> list[RecordIssue]:
        """Issues whose JSON path names the list and the position in it (`$.K_R[5].question`)."""
        issues = super().validate(records, path)
        forget, retain, data = self._lists(path)
        n_forget = len(data[forget])
        located = []
        for issue in issues:
            index = issue.index or 0
            key, position = (forget, index) if index < n_forget else (retain, index - n_forget)
            located.append(replace(issue, path=f"$.{key}[{position}]{issue.path[1:]}"))
        return located

    def to_cases(self, record: Mapping[str, Any], case_id: str) -> Iterator[EditCase]:
        truth = flatten_answers(record["ground_truth"])
        yield EditCase(
            case_id=case_id,
            prompt=SANITATION_TEMPLATE.format(record["question"]),
            target_new=record.get("target_new") or truth[0],
            subject=record.get("subject", ""),
            ground_truth=truth,
            extras={"role": record["role"], "question": record["question"], "answer": truth[0]},
        )


def _attach_retain(loaded: LoadedCases) -> LoadedCases:
    """Forget items become the edit cases; retain items their `retain` locality probes.

    Retain items are dealt out round-robin, so each is asked exactly once per run, after the edit
    of one forget case, and the cost stays one generation per retain item.
    """
    forget = [c for c in loaded.cases if c.extras["role"] == "forget"]
    retain = [c for c in loaded.cases if c.extras["role"] == "retain"]
    shares: list[list[Probe]] = [[] for _ in forget]
    for i, case in enumerate(retain):
        if shares:
            shares[i % len(shares)].append(Probe(case.prompt, case.ground_truth))
    cases = tuple(
        replace(case, locality={"retain": tuple(share)} if share else {})
        for case, share in zip(forget, shares, strict=True)
    )
    return replace(loaded, cases=cases)
