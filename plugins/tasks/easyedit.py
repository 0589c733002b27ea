"""EasyEdit's flat record formats: its own CounterFact files and the WISE lifelong-editing data.

All of them carry one neighbouring probe per record as `locality_prompt` / `locality_ground_truth`;
it becomes the `neighborhood` locality group, the name the ROME-format `counterfact` task uses for
the same kind of probe. Their files come from `--data-dir` under the names EasyEdit ships.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any, ClassVar

from harness.api import DataFile, EditCase, Probe
from harness_plugins.tasks.base import FACT_METRICS, RecordTask
from harness_plugins.tasks.normalize import add_probes, probe, text_list

#: The metrics of passage edits, as for KnowEdit's WikiBio: no rephrases or portability to score.
PASSAGE_METRICS = ("edit_succ", "locality", "fluency", "perplexity")


def _files(folder: str, stem: str, splits: Mapping[str, str]) -> dict[str, DataFile]:
    """split -> the file `<stem>-<suffix>.json`, directly in the data directory or under `folder/`."""
    return {
        split: DataFile(local=(f"{stem}-{suffix}.json", f"{folder}/{stem}-{suffix}.json"))
        for split, suffix in splits.items()
    }


def _neighborhood(record: Mapping[str, Any]) -> dict[str, tuple[Probe, ...]]:
    locality: dict[str, tuple[Probe, ...]] = {}
    add_probes(
        locality, "neighborhood", [probe(record.get("locality_prompt"), record.get("locality_ground_truth"))]
    )
    return locality


class EasyEditCounterFact(RecordTask):
    """CounterFact as EasyEdit's `CounterFactDataset` reads it: one flat record per edit.

    The `test` split is `counterfact-edit.json`, the set EasyEdit evaluates edits on; `val` and
    `train` are the sets its MEND/SERAC trainers use.
    """

    name = "easyedit_counterfact"
    record_format = "easyedit_counterfact"
    metrics = FACT_METRICS
    splits = ("test", "val", "train")
    files: ClassVar = _files("counterfact", "counterfact", {"test": "edit", "val": "val", "train": "train"})

    def to_cases(self, record: Mapping[str, Any], case_id: str) -> Iterator[EditCase]:
        yield EditCase(
            case_id=case_id,
            prompt=record["prompt"],
            target_new=record["target_new"],
            subject=record["subject"],
            ground_truth=text_list(record["ground_truth"]),
            rephrases=text_list(record.get("rephrase_prompt")),
            locality=_neighborhood(record),
            extras={"source_case_id": record.get("case_id")},
        )


class WiseHallucination(RecordTask):
    """WISE's hallucination set: a WikiBio-style passage continued by its corrected sentence.

    The `train` file is what WISE draws its unrelated memory-routing texts from; here it loads as
    cases like the `test` (edit) file, and which one a run edits is the user's choice of split.
    """

    name = "wise_hallucination"
    record_format = "wise_hallucination"
    metrics = PASSAGE_METRICS
    splits = ("test", "train")
    files: ClassVar = _files("hallucination", "hallucination", {"test": "edit", "train": "train"})

    def to_cases(self, record: Mapping[str, Any], case_id: str) -> Iterator[EditCase]:
        yield EditCase(
            case_id=case_id,
            prompt=record["prompt"],
            target_new=record["target_new"],
            subject=record["subject"],
            locality=_neighborhood(record),
        )


class WiseTemporal(WiseHallucination):
    """WISE's temporal set: a topic (`prompt`) continued by a long description of recent events.

    `ood_rephrase` is a whole passage about the topic, which WISE scores on its own (the share of
    its tokens predicted with probability above 0.8), not as a prompt for `target_new`; so it is
    kept in `extras` for a metric plugin rather than counted as a rephrase.
    """

    name = "wise_temporal"
    record_format = "wise_temporal"
    files: ClassVar = _files("temporal", "temporal", {"test": "edit", "train": "train"})

    def to_cases(self, record: Mapping[str, Any], case_id: str) -> Iterator[EditCase]:
        for case in super().to_cases(record, case_id):
            yield replace(case, extras={"ood_rephrase": record["ood_rephrase"]})
