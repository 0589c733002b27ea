"""Editing formats older than KnowEdit: ROME's CounterFact, MEND's zsRE, and MQuAKE.

None of them is on the KnowEdit hub, so their files come from `--data-dir` (under the names the
original projects use) or from a dataset spec naming the file.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from harness.api import DataFile, EditCase, Probe
from harness_plugins.tasks.base import FACT_METRICS, RecordTask
from harness_plugins.tasks.normalize import add_probes, flatten_answers, probe, text_list

#: MEND's zsRE train file (the train split of the KnowEdit study's ZsRE) in a data directory:
#: EasyEdit ships it as `zsre_mend_train.json` and its first 10,000 records as
#: `zsre_mend_train_10000.json`, the set the study trained on.
MEND_ZSRE_TRAIN = DataFile(
    local=tuple(
        f"{folder}{stem}.json"
        for folder in ("", "zsre/", "ZsRE/")
        for stem in ("zsre_mend_train_10000", "zsre_mend_train")
    ),
    obtain="The ZsRE train split is MEND's zsRE train file (zsre_mend_train.json, in EasyEdit's data "
    "download; it is not on the KnowEdit hub).",
)


def _one_hop(record: Mapping[str, Any], groups: dict[str, tuple[Probe, ...]]) -> None:
    """EasyEdit's one-hop portability extension (`New Question` / `New Answer`)."""
    extension = record.get("portability")
    if isinstance(extension, Mapping):
        add_probes(groups, "reasoning", [probe(extension.get("New Question"), extension.get("New Answer"))])


class CounterFact(RecordTask):
    """ROME/MEMIT CounterFact: one `requested_rewrite` with paraphrase and neighborhood prompts.

    EasyEdit's extensions are honoured where present: one-hop `portability`, `alternative_subject`
    (subject aliasing), `distracting_neighborhood_prompts` and `unrelated_relation` (locality).
    """

    name = "counterfact"
    record_format = "counterfact"
    metrics = FACT_METRICS
    files: ClassVar = {"test": DataFile(local=("counterfact.json", "counterfact/counterfact.json"))}

    def to_cases(self, record: Mapping[str, Any], case_id: str) -> Iterator[EditCase]:
        rewrite = record["requested_rewrite"]
        subject, template = rewrite["subject"], rewrite["prompt"]
        target, truth = rewrite["target_new"]["str"], rewrite["target_true"]["str"]
        portability: dict[str, tuple[Probe, ...]] = {}
        _one_hop(record, portability)
        if record.get("alternative_subject"):
            add_probes(
                portability,
                "subject_aliasing",
                [probe(template.replace("{}", record["alternative_subject"]), target)],
            )
        locality: dict[str, tuple[Probe, ...]] = {}
        add_probes(
            locality, "neighborhood", (probe(p, truth) for p in record.get("neighborhood_prompts", ()))
        )
        add_probes(
            locality,
            "distracting_neighborhood",
            (probe(p, truth) for p in record.get("distracting_neighborhood_prompts", ())),
        )
        unrelated = record.get("unrelated_relation")
        if isinstance(unrelated, Mapping):
            add_probes(
                locality, "unrelated_relation", [probe(unrelated.get("question"), unrelated.get("object"))]
            )
        yield EditCase(
            case_id=case_id,
            prompt=template.replace("{}", subject),
            target_new=target,
            subject=subject,
            ground_truth=(truth,),
            rephrases=text_list(record.get("paraphrase_prompts")),
            portability=portability,
            locality=locality,
            extras={
                "source_case_id": record.get("case_id"),
                "generation_prompts": list(text_list(record.get("generation_prompts"))),
            },
        )


class ZsREMend(RecordTask):
    """zsRE in the MEND format (`src`, `alt`, `rephrase`, `loc`/`loc_ans`).

    EasyEdit's extensions are honoured where present: one-hop `portability`,
    `alter_subject_question` (subject aliasing) and `inverse question` (answered by the subject).
    """

    name = "zsre_mend"
    record_format = "zsre_mend"
    metrics = FACT_METRICS
    splits = ("test", "train")
    files: ClassVar = {
        "test": DataFile(local=("zsre_mend_eval.json", "zsre/zsre_mend_eval.json")),
        "train": MEND_ZSRE_TRAIN,
    }

    def to_cases(self, record: Mapping[str, Any], case_id: str) -> Iterator[EditCase]:
        portability: dict[str, tuple[Probe, ...]] = {}
        _one_hop(record, portability)
        add_probes(
            portability, "subject_aliasing", [probe(record.get("alter_subject_question"), record["alt"])]
        )
        add_probes(
            portability, "inverse_relation", [probe(record.get("inverse question"), record["subject"])]
        )
        locality: dict[str, tuple[Probe, ...]] = {}
        add_probes(locality, "natural_questions", [probe(record.get("loc"), record.get("loc_ans"))])
        yield EditCase(
            case_id=case_id,
            prompt=record["src"],
            target_new=record["alt"],
            subject=record["subject"],
            ground_truth=flatten_answers(record["answers"]),
            rephrases=text_list(record.get("rephrase")),
            portability=portability,
            locality=locality,
        )


class MQuAKE(RecordTask):
    """Multi-hop questions whose answer changes only when every one of several edits holds.

    The first requested rewrite is the case's own edit; all of them (in order) are in
    `extras["requested_rewrites"]` for methods and modes that apply several edits per case.
    The multi-hop questions are the `multi_hop` portability group, answered by the new answer.
    """

    name = "mquake"
    record_format = "mquake"
    metrics = ("edit_succ", "generalization", "portability")
    files: ClassVar = {"test": DataFile(local=("MQuAKE-CF-3k.json", "MQuAKE-hard.json"))}

    def to_cases(self, record: Mapping[str, Any], case_id: str) -> Iterator[EditCase]:
        rewrites = [
            {
                "prompt": r["prompt"].replace("{}", r["subject"]),
                "subject": r["subject"],
                "target_new": r["target_new"]["str"],
                "ground_truth": r["target_true"]["str"] if "target_true" in r else "",
                "question": r.get("question", ""),
            }
            for r in record["requested_rewrite"]
        ]
        first = rewrites[0]
        answers = flatten_answers([record["new_answer"], record.get("new_answer_alias", [])])
        portability = {}
        add_probes(portability, "multi_hop", (probe(q, answers) for q in record["questions"]))
        yield EditCase(
            case_id=case_id,
            prompt=first["prompt"],
            target_new=first["target_new"],
            subject=first["subject"],
            ground_truth=flatten_answers(first["ground_truth"]),
            rephrases=text_list(first["question"]),
            portability=portability,
            extras={"source_case_id": record.get("case_id"), "requested_rewrites": rewrites},
        )
