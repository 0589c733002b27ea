"""Every real file under ../shared/data loads completely, with the record counts of its README."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.tasks import resolve_task

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
KNOWEDIT = SHARED / "knowedit"
OTHER = SHARED / "other"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not KNOWEDIT.is_dir(), reason="the shared real data is not on this machine"),
]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)


@pytest.mark.parametrize(
    ("task", "split", "count"),
    [
        ("zsre", "test", 1301),
        ("wiki_recent", "train", 570),
        ("wiki_counterfact", "train", 1428),
        ("wiki_counterfact", "test", 885),
        ("wikibio", "test", 306),
        ("wikibio", "train", 464),
        ("convsent", "test", 800),
        ("sanitation", "test", 80),
        ("sanitation", "train", 80),
    ],
)
def test_knowedit_file_loads_completely(task, split, count):
    loaded = resolve_task(task).load(split=split, data_dir=str(KNOWEDIT))
    assert len(loaded.cases) == count and loaded.skipped == ()
    assert len({c.case_id for c in loaded.cases}) == count


def test_sanitation_retain_lists_are_all_used():
    for split, retain in (("test", 453), ("train", 453)):
        cases = resolve_task("sanitation").load(split=split, data_dir=str(KNOWEDIT)).cases
        assert sum(len(c.locality["retain"]) for c in cases) == retain


def test_hand_picked_zsre_record():
    case = resolve_task("zsre").load(data_dir=str(KNOWEDIT)).cases[0]
    assert (case.subject, case.target_new, case.ground_truth) == (
        "Epaspidoceras",
        "Noctuidae",
        ("Aspidoceratidae",),
    )
    assert case.rephrases == ("What family are Epaspidoceras?",)
    assert case.portability["reasoning"][0].answers == ("Owlet moths",)
    assert [p.answers for p in case.locality["relation_specificity"]] == [("genus",), ("genus",)]


def test_hand_picked_recent_record_has_aliases_in_order():
    case = resolve_task("wiki_recent").load(split="train", data_dir=str(KNOWEDIT)).cases[0]
    assert case.ground_truth == ()
    citizenship = case.locality["relation_specificity"][1]
    assert citizenship.answers[:3] == ("Soviet Union", "USSR", "U.S.S.R.")


def test_empty_alias_lists_drop_probes_in_counterfact_test():
    cases = resolve_task("wiki_counterfact").load(data_dir=str(KNOWEDIT)).cases
    probes = [p for c in cases for g in (*c.portability.values(), *c.locality.values()) for p in g]
    assert probes and all(p.answers and all(a.strip() for a in p.answers) for p in probes)


@pytest.mark.parametrize(
    ("task", "relative", "count"),
    [
        ("counterfact", "rome_memit_samples/counterfact_sample.json", 5),
        ("counterfact", "easyedit_editing_data/portability/One Hop/counterfact_portability_gpt4.json", 1031),
        (
            "counterfact",
            "easyedit_editing_data/portability/Subject Replace/counterfact_subject_replace.json",
            213,
        ),
        (
            "counterfact",
            "easyedit_editing_data/locality/Distracting Neighbor/counterfact_distracting_neighbor.json",
            804,
        ),
        ("zsre_mend", "rome_memit_samples/zsre_sample.json", 5),
        ("zsre_mend", "easyedit_editing_data/portability/One Hop/zsre_mend_eval_portability_gpt4.json", 1037),
        ("zsre_mend", "easyedit_editing_data/portability/Subject Replace/zsre_subject_replace.json", 293),
        ("zsre_mend", "easyedit_editing_data/portability/Inverse Relation/zsre_inverse_relation.json", 385),
        ("mquake", "mquake/MQuAKE-hard.json", 429),
    ],
)
def test_other_format_file_loads_completely(task, relative, count):
    cls = type(resolve_task(task))
    loaded = cls(paths={"test": OTHER / relative}).load()
    assert len(loaded.cases) == count and loaded.skipped == ()


def test_hand_picked_counterfact_and_mquake_records():
    cf = type(resolve_task("counterfact"))(
        paths={"test": OTHER / "rome_memit_samples/counterfact_sample.json"}
    )
    case = cf.load().cases[0]
    assert (case.prompt, case.target_new, case.ground_truth) == (
        "The mother tongue of Danielle Darrieux is",
        "English",
        ("French",),
    )
    assert len(case.rephrases) == 2 and len(case.locality["neighborhood"]) == 10
    mq = type(resolve_task("mquake"))(paths={"test": OTHER / "mquake/MQuAKE-hard.json"}).load().cases[0]
    assert mq.prompt == "Hey Jude was performed by" and mq.target_new == "Madonna"
    assert len(mq.extras["requested_rewrites"]) == 4
    assert mq.portability["multi_hop"][0].answers[:2] == ("Arabic", "ar")
