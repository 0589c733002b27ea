"""Every real file under ../shared/data loads completely, with the record counts of its README."""

from __future__ import annotations

import pytest
from shared_data import KNOWEDIT, MEND_ZSRE_EVAL
from shared_data import SHARED_DATA as SHARED

from harness.api import HarnessError
from harness.testing import resolve_task

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


@pytest.mark.parametrize(
    ("task", "folder", "split", "count", "probed"),
    [
        ("easyedit_counterfact", "easyedit_editing_data", "test", 10000, 10000),
        ("easyedit_counterfact", "easyedit_editing_data", "val", 1919, 1919),
        ("wise_hallucination", "easyedit_wise_data", "test", 600, 593),
        ("wise_hallucination", "easyedit_wise_data", "train", 306, 301),
        ("wise_temporal", "easyedit_wise_data", "test", 75, 75),
        ("wise_temporal", "easyedit_wise_data", "train", 75, 74),
    ],
)
def test_easyedit_flat_file_loads_completely_from_its_data_dir(task, folder, split, count, probed):
    """`probed`: the records whose locality answer is not blank (the WISE files have a few blank ones)."""
    loaded = resolve_task(task).load(split=split, data_dir=str(OTHER / folder))
    assert len(loaded.cases) == count and loaded.skipped == ()
    assert sum(len(c.locality.get("neighborhood", ())) for c in loaded.cases) == probed


def test_hand_picked_easyedit_counterfact_record():
    folder = str(OTHER / "easyedit_editing_data")
    case = resolve_task("easyedit_counterfact").load(split="val", data_dir=folder).cases[0]
    assert case.case_id == "easyedit_counterfact:val:0" and case.extras == {"source_case_id": 10}
    assert (case.prompt, case.subject, case.target_new, case.ground_truth) == (
        "BBC One, by",
        "BBC One",
        "Sega",
        ("BBC",),
    )
    assert case.rephrases == ("BBC One is my favorite product out of everything owned by",)
    assert [(p.prompt, p.answers) for p in case.locality["neighborhood"]] == [("BBC Radio, by", ("BBC",))]


def test_hand_picked_wise_records():
    folder = str(OTHER / "easyedit_wise_data")
    passage = resolve_task("wise_hallucination").load(data_dir=folder).cases[0]
    assert passage.subject == "carole gist" and passage.prompt.startswith("This is a Wikipedia passage about")
    assert passage.target_new.startswith("She was also the first contestant from Michigan to win Miss USA")
    assert passage.ground_truth == () and passage.rephrases == () and passage.extras == {}
    topic = resolve_task("wise_temporal").load(data_dir=folder).cases[0]
    assert (topic.prompt, topic.subject) == ("Tesla, Inc.,", "Tesla, Inc.,")
    assert topic.rephrases == () and topic.extras["ood_rephrase"].startswith("Tesla, Inc., an American")
    assert topic.locality["neighborhood"][0].answers[0].startswith("in digital banking alone")


def test_piqa_locality_file_reads_as_probe_questions():
    from harness_plugins.tasks.piqa import read_piqa

    questions = read_piqa(OTHER / "easyedit_editing_data/locality/Commonsense Task/piqa_valid.jsonl")
    assert len(questions) == 1838
    assert questions[0].goal == "How do I ready a guinea pig cage for it's new occupants?"
    assert [s.split("made of ")[1][:13] for s in questions[0].solutions] == ["ripped paper ", "ripped jeans "]


def test_zsre_train_split_reads_mend_zsre_records_where_knowedit_has_none(tmp_path):
    """The study's ZsRE train split is MEND's zsRE train file; the EasyEdit copy of MEND's zsRE
    eval file has its record format and stands in for it here."""
    (tmp_path / "ZsRE").mkdir()
    (tmp_path / "ZsRE" / "zsre_mend_train.json").write_bytes(MEND_ZSRE_EVAL.read_bytes())
    loaded = resolve_task("zsre").load(split="train", data_dir=str(tmp_path))
    assert len(loaded.cases) == 1037 and loaded.cases[0].case_id == "zsre:train:0"
    first = loaded.cases[0]
    assert first.prompt == "When was the inception of IAAF Combined Events Challenge?" and first.rephrases
    [probe] = first.locality["natural_questions"]
    assert probe.prompt.startswith("nq question: ")
    with pytest.raises(HarnessError, match="MEND's zsRE train file") as error:
        resolve_task("zsre").load(split="train", data_dir=str(KNOWEDIT))
    assert f"{KNOWEDIT / 'ZsRE' / 'zsre_mend_train_10000.json'}" in str(error.value)
