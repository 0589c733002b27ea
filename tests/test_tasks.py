"""Tasks: answer normalization, validation before loading, data location, dataset specs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.api import HarnessError, Probe
from harness.testing import resolve_task
from harness_plugins.tasks.normalize import flatten_answers, group_name, probe_groups

EXAMPLE_SPEC = Path(__file__).resolve().parents[1] / "examples" / "dataset-spec" / "spec.json"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test may reach the hub; an unset data dir must not leak in from the environment."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)


def write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


FACT = {
    "subject": "Marie Curie",
    "prompt": "Marie Curie was born in",
    "target_new": "Lisbon",
    "ground_truth": [["Warsaw", "Warszawa"], []],
    "rephrase_prompt": "The birthplace of Marie Curie is",
    "portability": {
        "Reasoning": [{"prompt": "The country Marie Curie was born in is", "ground_truth": [["Portugal"]]}],
        "reasoning": [{"prompt": "The river of her birth city is", "ground_truth": "Tagus"}],
        "Logical_Generalization": [{"prompt": "Was Marie Curie born in Poland?", "ground_truth": [[]]}],
    },
    "locality": {
        "Relation_Specificity": [
            {"prompt": "Marie Curie's field is", "ground_truth": ["physics", "chemistry"]}
        ],
        "Forgetfulness": [{"prompt": "Marie Curie was born in, not Lisbon,", "ground_truth": "  "}],
    },
}


def test_flatten_answers_keeps_source_order_and_drops_blanks():
    assert flatten_answers("Paris") == ("Paris",)
    assert flatten_answers(["Paris", " ", "Paname"]) == ("Paris", "Paname")
    assert flatten_answers([[], ["Spain", "Kingdom of Spain"], ["Spain"]]) == ("Spain", "Kingdom of Spain")
    assert flatten_answers([[]]) == ()
    assert flatten_answers(None) == ()


def test_group_names_are_snake_case():
    assert group_name("Subject_Aliasing") == "subject_aliasing"
    assert group_name("Reasoning") == group_name("reasoning") == "reasoning"
    assert group_name("One Hop") == "one_hop"


def test_probe_groups_merge_case_variants_and_drop_empty_groups():
    groups = probe_groups(FACT["portability"])
    assert list(groups) == ["reasoning"]
    assert [p.answers for p in groups["reasoning"]] == [("Portugal",), ("Tagus",)]


def test_fact_record_normalizes(tmp_path):
    path = write(tmp_path / "ZsRE" / "ZsRE-test-all.json", [FACT, {**FACT, "subject": "Marie"}])
    loaded = resolve_task("wiki_counterfact").__class__(paths={"test": path}).load()
    case = loaded.cases[0]
    assert case.case_id == "wiki_counterfact:test:0"
    assert [c.case_id for c in loaded.cases] == ["wiki_counterfact:test:0", "wiki_counterfact:test:1"]
    assert case.ground_truth == ("Warsaw", "Warszawa")
    assert case.rephrases == ("The birthplace of Marie Curie is",)
    assert case.locality == {
        "relation_specificity": (Probe("Marie Curie's field is", ("physics", "chemistry")),)
    }
    assert set(case.portability) == {"reasoning"}
    json.dumps(case.to_json())


def test_recent_record_without_ground_truth(tmp_path):
    record = {k: v for k, v in FACT.items() if k != "ground_truth"}
    path = write(tmp_path / "recent.json", [record])
    case = resolve_task("wiki_recent").__class__(paths={"test": path}).load().cases[0]
    assert case.ground_truth == ()
    assert case.target_new == "Lisbon"


def test_missing_ground_truth_is_an_error_where_the_format_requires_it(tmp_path):
    record = {k: v for k, v in FACT.items() if k != "ground_truth"}
    path = write(tmp_path / "cf.json", [FACT, record])
    task = resolve_task("wiki_counterfact").__class__(paths={"test": path})
    with pytest.raises(HarnessError) as err:
        task.load()
    message = str(err.value)
    assert "cf.json: record 1" in message and "ground_truth" in message and "--skip-invalid" in message
    loaded = task.load(skip_invalid=True)
    assert [c.case_id for c in loaded.cases] == ["wiki_counterfact:test:0"]
    assert [(i.index, i.file) for i in loaded.skipped] == [(1, str(path))]


def test_wikibio_fields(tmp_path):
    record = {
        "text": "This is a Wikipedia passage about ada lovelace. Ada Lovelace was a mathematician.",
        "labels": "She wrote the first published program.",
        "concept": "ada lovelace",
        "locality": {
            "Relation_Specificity": [{"prompt": "ada lovelace field", "ground_truth": ["mathematics"]}]
        },
    }
    case = (
        resolve_task("wikibio")
        .__class__(paths={"test": write(tmp_path / "w.json", [record])})
        .load()
        .cases[0]
    )
    assert (case.prompt, case.target_new, case.subject) == (record["text"], record["labels"], "ada lovelace")
    assert case.locality["relation_specificity"][0].answers == ("mathematics",)
    assert case.portability == {}


def convsent_records():
    return [
        {"ent": "jazz", "pos": [" I love jazz. ", "Jazz is great."], "neg": ["Jazz is noise.", " "]},
        {"ent": "tea", "pos": ["Tea is lovely."], "neg": ["Tea is bland.", "I dislike tea."]},
    ]


def test_convsent_extras_are_seeded_and_link_the_next_topic(tmp_path):
    task = resolve_task("convsent").__class__(paths={"test": write(tmp_path / "c.json", convsent_records())})
    first, again = task.load().cases, task.load().cases
    assert first == again
    jazz, tea = first
    extras = jazz.extras
    assert extras["topic"] == "jazz" and extras["target_sentiment"] in ("positive", "negative")
    sentences = {"positive": ["I love jazz.", "Jazz is great."], "negative": ["Jazz is noise."]}
    chosen = extras["target_sentiment"]
    other = "negative" if chosen == "positive" else "positive"
    assert extras["target_sentences"] == sentences[chosen]
    assert extras["opposite_sentences"] == sentences[other]
    assert jazz.target_new == sentences[chosen][0]
    assert jazz.prompt.endswith(f"{chosen}ly.") and "jazz" in extras["question"]
    assert extras["outer_topic"] == "tea" and sorted(extras["outer_sentences"]) == sorted(
        ["Tea is lovely.", "Tea is bland.", "I dislike tea."]
    )
    assert tea.extras["outer_topic"] == "jazz"
    json.dumps(jazz.to_json())


def sanitation_file(tmp_path, forget_key="success", retain_key="locality", bad=False):
    forget = [
        {"question": f"What kind of animal is a {b}?", "ground_truth": "Birds", "target_new": "I don't know."}
        for b in ("wren", "robin")
    ]
    retain = [{"question": f"Question {i}?", "ground_truth": f"A{i}"} for i in range(5)]
    if bad:
        retain[3] = {"question": "Who?"}
    return write(tmp_path / "s.json", {forget_key: forget, retain_key: retain})


@pytest.mark.parametrize("keys", [("success", "locality"), ("K_F", "K_R")])
def test_sanitation_shapes(tmp_path, keys):
    task = resolve_task("sanitation").__class__(paths={"test": sanitation_file(tmp_path, *keys)})
    cases = task.load().cases
    assert [c.extras["role"] for c in cases] == ["forget", "forget"]
    assert cases[0].prompt == "Question:What kind of animal is a wren?\nAnswer:"
    assert cases[0].target_new == "I don't know." and cases[0].ground_truth == ("Birds",)
    retained = [p for c in cases for p in c.locality["retain"]]
    assert sorted(p.answers[0] for p in retained) == [f"A{i}" for i in range(5)]
    assert retained[0].prompt == "Question:Question 0?\nAnswer:"


def test_sanitation_bad_item_is_located_in_its_list(tmp_path):
    path = sanitation_file(tmp_path, bad=True)
    task = resolve_task("sanitation").__class__(paths={"test": path})
    issues = task.check_file(str(path))
    assert [(i.path, i.message) for i in issues] == [
        ("$.locality[3]", "missing required field 'ground_truth'")
    ]
    with pytest.raises(HarnessError, match=r"locality\[3\]"):
        task.load()


def test_sanitation_wrong_top_level_shape(tmp_path):
    path = write(tmp_path / "s.json", [{"question": "q", "ground_truth": "a"}])
    task = resolve_task("sanitation").__class__(paths={"test": path})
    (issue,) = task.check_file(str(path))
    assert "K_F" in issue.message and "success" in issue.message


def test_unknown_split_is_a_clear_error():
    with pytest.raises(HarnessError, match=r"no split 'dev'.*test, train"):
        resolve_task("wikibio").load(split="dev", data_dir="/nonexistent")


def test_not_found_names_every_place_and_the_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "env"))
    with pytest.raises(HarnessError) as err:
        resolve_task("zsre").load(data_dir=str(tmp_path / "flag"))
    message = str(err.value)
    assert str(tmp_path / "flag" / "ZsRE" / "ZsRE-test-all.json") in message
    assert str(tmp_path / "env" / "ZsRE" / "ZsRE-test-all.json") in message
    assert "zjunlp/KnowEdit" in message and "benchmark/ZsRE/ZsRE-test-all.json" in message
    assert "--data-dir" in message


def test_data_dir_flag_wins_over_environment(tmp_path, monkeypatch):
    write(tmp_path / "env" / "ZsRE" / "ZsRE-test-all.json", [FACT])
    write(tmp_path / "flag" / "ZsRE" / "ZsRE-test-all.json", [FACT, FACT])
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "env"))
    assert len(resolve_task("zsre").load().cases) == 1
    assert len(resolve_task("zsre").load(data_dir=str(tmp_path / "flag")).cases) == 2


def test_recent_test_split_falls_back_to_train_and_says_so(tmp_path):
    record = {k: v for k, v in FACT.items() if k != "ground_truth"}
    write(tmp_path / "wiki_recent" / "recent_train.json", [record])
    loaded = resolve_task("wiki_recent").load(data_dir=str(tmp_path))
    assert loaded.cases[0].case_id == "wiki_recent:train:0"
    assert "train split is used instead" in loaded.source


def test_example_dataset_spec_loads_end_to_end():
    task = resolve_task(str(EXAMPLE_SPEC))
    assert task.name == "capital_swaps" and "locality" in task.metrics
    cases = task.load().cases
    assert len(cases) == 3
    france = cases[0]
    assert (france.prompt, france.target_new, france.ground_truth) == (
        "The capital of France is",
        "Lyon",
        ("Paris",),
    )
    assert france.rephrases == ("France's capital city is",)
    assert france.locality["relation_specificity"][1] == Probe("The capital of Italy is", ("Rome",))
    assert france.portability["reasoning"][0].answers == ("Rhône",)
    assert cases[1].portability == {}


def test_spec_with_record_format_reads_files_relative_to_it(tmp_path):
    write(tmp_path / "data" / "mine.json", [FACT])
    spec = write(
        tmp_path / "spec.json", {"name": "mine", "files": {"test": "data/mine.json"}, "record_format": "zsre"}
    )
    cases = resolve_task(str(spec)).load().cases
    assert cases[0].case_id == "mine:test:0"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"name": "x", "files": {"test": "a.json"}}, "record_format"),
        ({"name": "x", "files": {"test": "a.json"}, "record_format": "nope"}, "no installed task reads"),
        ({"name": "x", "files": {}, "record_format": "zsre"}, "files"),
        ({"name": "x", "files": {"test": "a.json"}, "fields": {"subject": "s", "prompt": "q"}}, "target_new"),
    ],
)
def test_bad_specs_are_clear_errors(tmp_path, spec, expected):
    path = write(tmp_path / "spec.json", spec)
    with pytest.raises(HarnessError, match=expected) as err:
        resolve_task(str(path))
    assert str(path) in str(err.value)


def test_mapped_record_missing_a_field_names_the_canonical_field(tmp_path):
    write(tmp_path / "d.json", [{"q": "The capital of Peru is", "s": "Peru"}])
    spec = {
        "name": "m",
        "files": {"test": "d.json"},
        "fields": {"subject": "s", "prompt": "q", "target_new": "new"},
    }
    with pytest.raises(HarnessError, match=r"record 0 at \$: missing required field 'target_new'"):
        resolve_task(str(write(tmp_path / "spec.json", spec))).load()


def test_every_task_is_listed_with_source_and_format():
    from harness.plugins import get_registry

    components = get_registry().components["tasks"]
    for name in ("zsre", "wiki_recent", "wiki_counterfact", "wikibio", "convsent", "sanitation"):
        assert components[name].info["record_format"] == name
        assert "KnowEdit" in components[name].info["source"]
    for name in ("counterfact", "zsre_mend", "mquake"):
        assert components[name].info["record_format"] == name


# -- the format-to-task contract of dataset specs (`Task.from_spec`, declared by registration) ----


def _registry_with(*plugins):
    from harness.plugins import build_registry

    return build_registry(extra_plugins=[(f"p{i}", plugin) for i, plugin in enumerate(plugins)])


def _tasks_plugin(**targets):
    from harness.api import hookimpl

    class Plugin:
        @hookimpl
        def harness_register_tasks(self, register):
            for name, (target, info) in targets.items():
                register(name, target, **info)

    return Plugin()


def test_a_spec_is_read_by_the_task_named_after_its_format_and_a_mapping_by_the_marked_one(tmp_path):
    from harness.plugins import get_registry

    tasks = get_registry().tasks
    assert tasks.formats()["zsre"][:2] == ["zsre", "mini_zsre"]  # the canonical reader first
    assert tasks.reader("zsre", "spec.json").__name__ == "ZsRE"
    assert tasks.reader(None, "spec.json").__name__ == "WikiRecent"  # registered field_mapping=True
    spec = {
        "name": "mapped",
        "files": {"test": "d.json"},
        "fields": {"subject": "s", "prompt": "q", "target_new": "n"},
    }
    write(tmp_path / "d.json", [{"s": "Peru", "q": "The capital of Peru is", "n": "Cusco"}])
    task = tasks.from_spec(write(tmp_path / "spec.json", spec))
    assert (task.name, task.record_format, task.splits) == ("mapped", "wiki_recent", ("test",))
    assert task.load().cases[0].target_new == "Cusco"


def test_a_registered_spec_path_is_a_task_of_its_own(tmp_path):
    write(tmp_path / "d.json", [FACT])
    spec = write(
        tmp_path / "mine.json", {"name": "mine", "files": {"test": "d.json"}, "record_format": "zsre"}
    )
    registry = _registry_with(_tasks_plugin(mine=(str(spec), {}), other=(str(spec), {})))
    task = registry.tasks.load("mine")
    assert task.name == "mine" and task.load().cases[0].case_id == "mine:test:0"
    with pytest.raises(
        HarnessError, match=r"dataset spec .*mine.json is named 'mine' but registered as 'other'"
    ):
        registry.tasks.load("other")


def test_a_task_class_that_reads_no_specs_refuses_through_the_default_from_spec(tmp_path, monkeypatch):
    from harness.api import Task

    class OwnFormat(Task):
        name = "own"
        record_format = "own"

    monkeypatch.setenv("HARNESS_DISABLE_PLUGINS", "builtin_tasks")
    registry = _registry_with(_tasks_plugin(own=(OwnFormat, {"record_format": "own"})))
    spec = write(tmp_path / "s.json", {"name": "s", "files": {"test": "d.json"}, "record_format": "own"})
    with pytest.raises(HarnessError, match=r"s.json: task class OwnFormat does not read dataset specs"):
        registry.tasks.from_spec(spec)
    mapped = {
        "name": "s",
        "files": {"test": "d.json"},
        "fields": {"subject": "s", "prompt": "q", "target_new": "n"},
    }
    with pytest.raises(HarnessError, match=r"at \$.fields: no installed task reads field-mapped records"):
        registry.tasks.from_spec(write(tmp_path / "m.json", mapped))
