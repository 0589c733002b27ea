"""Where ROME and MEMIT key an edit: the subject located as a reader would locate it (exact, else
one occurrence under another letter case or Unicode normal form), blank and ambiguous subjects
refused before any model loads, every skipped case named, and the located ones noted in the
manifest. Small invented inputs on the tiny models of both tokenizer families."""

from __future__ import annotations

import dataclasses
import json
import unicodedata

import pytest

from harness.api import EditCase, HarnessError
from harness.plugins import get_registry
from harness.runs.catalog import Catalog
from harness.runs.plan import RunConfig
from harness.runs.runner import execute, plan
from harness.runs.schedule import schedule
from harness.runs.store import RunStore
from harness_plugins.rome_family.keys import (
    Rewrite,
    SubjectError,
    SubjectSpan,
    last_token_before,
    locate_subject,
    subject_reads,
)

TOWER = "The Eiffel Tower is located in"
NAME = "Amélie Mauresmo"
NFC, NFD = unicodedata.normalize("NFC", NAME), unicodedata.normalize("NFD", NAME)
assert NFC != NFD
#: (prompt, the subject as the prompt writes it, other spellings a reader takes for the same one)
VARIANTS = [
    (TOWER, "The Eiffel Tower", ["the Eiffel Tower", "THE EIFFEL TOWER", " The Eiffel Tower "]),
    (f"{NFC} won the title in", NFC, [NFD, NFD.lower(), "amélie mauresmo"]),
    (f"{NFD} won the title in", NFD, [NFC, NFC.upper()]),
    ("Die Straße is in", "Straße", ["STRASSE", "strasse"]),
]


@pytest.fixture(scope="module")
def methods():
    registry = get_registry()
    return [registry.load("methods", name)() for name in ("rome", "memit")]


def token_span(tokenizer, text: str, start: int, end: int) -> list[int]:
    """The tokens of `text` (as the harness encodes it) that overlap characters [start, end)."""
    offsets = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True).offset_mapping
    return [i for i, (lo, hi) in enumerate(offsets) if hi > lo and lo < end and hi > start]


@pytest.mark.parametrize(("prompt", "written", "variants"), VARIANTS)
def test_a_variant_locates_the_same_characters_and_tokens_as_the_exact_subject(
    tiny_handle, prompt, written, variants
):
    tok = tiny_handle.tokenizer
    exact = locate_subject(prompt, written)
    assert exact.exact and prompt[exact.start : exact.end] == written
    tokens = token_span(tok, prompt, exact.start, exact.end)
    key = last_token_before(tok, prompt, exact.end)
    assert tokens and key == tokens[-1]
    for variant in variants:
        span = locate_subject(prompt, variant)
        assert (span.start, span.end, span.exact) == (exact.start, exact.end, False), variant
        assert token_span(tok, prompt, span.start, span.end) == tokens
        rewrite = Rewrite(prompt, variant, "Rome")
        assert rewrite.subject == written and rewrite.subject_end("Hi. {}") == 4 + exact.end
        assert last_token_before(tok, prompt, rewrite.subject_end()) == key


def test_a_variant_reads_the_very_key_of_the_exact_subject(tiny_llama):
    module = tiny_llama.adapter.mlp_out_name(1)
    templates = ["{}", "Paris is a city. {}"]
    reads = [
        subject_reads(tiny_llama, module, [Rewrite(TOWER, subject, "Rome")], templates, "input")
        for subject in ("The Eiffel Tower", "the eiffel tower")
    ]
    assert reads[0].shape == (tiny_llama.adapter.intermediate_size, 1)
    assert reads[0].equal(reads[1])


def test_no_subject_is_keyed_at_the_prompts_end_and_needs_no_note(methods):
    case = EditCase("q", "Question: Where is Paris?\nAnswer:", "I don't know.")
    end = len(case.prompt)
    assert locate_subject(case.prompt, "") == SubjectSpan(end, end, "", exact=True)
    for method in methods:
        assert method.check_case(case) is None and method.case_note(case) is None


@pytest.mark.parametrize(
    ("prompt", "subject", "message"),
    [
        (TOWER, " ", r"field 'subject' is blank \(' '\): there is no token to key the edit at"),
        (TOWER, "\t\n", r"field 'subject' is blank \('\\t\\n'\)"),
        (
            "Paris is the capital; paris is big",
            "PARIS",
            r"field 'subject' \('PARIS'\) occurs 2 times in field 'prompt' \('Paris is the capital; paris is "
            r"big'\): 'Paris' at character 0, 'paris' at character 22; which one the edit means is "
            r"ambiguous",
        ),
        ("Paris, Paris and Rome", "Paris", r"'Paris' at character 0, 'Paris' at character 7"),
        (
            "Amelie won",
            NFC,
            r"field 'subject' \('Amélie Mauresmo' \(code points 'Am\\xe9lie Mauresmo'\)\) does not occur "
            r"in field 'prompt' \('Amelie won'\), not even ignoring letter case and Unicode normal form",
        ),
        # A subject never ends inside a character and its accent.
        (f"{NFD} won", "Ame", "does not occur"),
    ],
)
def test_blank_ambiguous_and_absent_subjects_are_refused_with_what_is_wrong(
    methods, prompt, subject, message
):
    with pytest.raises(SubjectError, match=message):
        locate_subject(prompt, subject)
    case = EditCase("c7", prompt, "Rome", subject=subject)
    for method in methods:
        problem = method.check_case(case)
        assert problem is not None and problem.startswith(f"{method.name}: case c7: field 'subject'")
        assert method.case_note(case) is None
        with pytest.raises(HarnessError, match=f"{method.name}: case c7: "):
            Rewrite.of(case, method.name)


def test_the_note_says_how_the_subject_was_located(methods):
    case = EditCase("c1", f"{NFC} won the title in", "Rome", subject=NFD)
    for method in methods:
        assert method.check_case(case) is None
        assert method.case_note(case) == (
            f"subject {NFD!r} (code points 'Ame\\u0301lie Mauresmo') located as {NFC!r} "
            "(code points 'Am\\xe9lie Mauresmo')"
        )
    exact = dataclasses.replace(case, subject=NFC)
    assert all(m.case_note(exact) is None for m in methods)


# -- through a run: records, the schedule, the manifest ---------------------------------------


def zsre_record(subject: str, prompt: str = TOWER) -> dict:
    return {
        "subject": subject,
        "prompt": prompt,
        "target_new": "Rome",
        "ground_truth": "Paris",
        "rephrase_prompt": f"Where is {subject.strip() or 'it'}?",
    }


def write_spec(folder, records: list[dict]) -> str:
    (folder / "facts.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    spec = {"name": "subjects", "files": {"test": "facts.json"}, "record_format": "zsre"}
    (folder / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
    return str(folder / "spec.json")


def scheduled(spec: str, skip_invalid: bool = False):
    catalog = Catalog(get_registry())
    config, jobs = plan(
        RunConfig(model="org/m", methods=("rome",), tasks=(spec,), skip_invalid=skip_invalid), catalog
    )
    warnings: list[str] = []
    return schedule(jobs, config, catalog, warnings.append), warnings


def test_a_blank_subject_is_an_invalid_record_and_each_skipped_one_is_named(tmp_path):
    records = [zsre_record("The Eiffel Tower"), zsre_record(" "), zsre_record(""), zsre_record("\t")]
    spec = write_spec(tmp_path, records)
    with pytest.raises(HarnessError, match=r"record 1 at \$\.subject: must not be blank, got \" \""):
        scheduled(spec)
    (job,), warnings = scheduled(spec, skip_invalid=True)
    assert [c.case_id for c in job.cases["subjects"]] == ["subjects:test:0"]
    (warning,) = warnings
    for index, shown in ((1, '" "'), (2, '""'), (3, '"\\t"')):
        assert f"facts.json: record {index} at $.subject: must not be blank, got {shown}" in warning
    assert "more" not in warning


def test_every_case_the_method_cannot_edit_is_named_when_skipped(tmp_path):
    doubled = "The Eiffel Tower faces the Eiffel Tower of Las Vegas in"
    records = [
        zsre_record("The Eiffel Tower"),
        zsre_record("Big Ben"),
        zsre_record("the eiffel tower", prompt=doubled),
        zsre_record("Colosseum"),
    ]
    spec = write_spec(tmp_path, records)
    with pytest.raises(
        HarnessError, match=r"rome cannot edit 3 of 4 cases .*: subjects:test:1, subjects:test:2"
    ):
        scheduled(spec)
    (job,), warnings = scheduled(spec, skip_invalid=True)
    assert len(job.ordered) == 1
    assert list(job.skipped) == ["subjects:test:1", "subjects:test:2", "subjects:test:3"]
    (warning,) = warnings
    lines = warning.splitlines()
    assert lines[0].endswith("3 of 4 cases skipped that rome cannot edit:")
    assert [line.split(": ")[0].strip() for line in lines[1:]] == list(job.skipped)
    assert "field 'subject' ('Big Ben') does not occur" in lines[1]
    assert "occurs 2 times" in lines[2] and "does not occur" in lines[3]


def test_located_and_skipped_subjects_are_warned_about_and_kept_in_the_manifest(
    tmp_path, tiny_model_dirs, monkeypatch
):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    records = [zsre_record("The Eiffel Tower"), zsre_record("the Eiffel Tower"), zsre_record("Big Ben")]
    spec = write_spec(tmp_path, records)
    (job,), warnings = scheduled(spec, skip_invalid=True)
    note = "subject 'the Eiffel Tower' located as 'The Eiffel Tower'"
    assert job.notes == {"subjects:test:1": note} and len(job.ordered) == 2
    assert list(job.skipped) == ["subjects:test:2"]
    header = f"{job.job.key}: rome's notes on 1 of 2 cases (kept in the manifest):"
    assert warnings[1] == f"{header}\n  subjects:test:1: {note}"
    config = RunConfig(
        model=str(tiny_model_dirs["llama"]),
        methods=("rome",),
        tasks=(spec,),
        skip_invalid=True,
        overrides={"context_templates": [[3, 1]], "v_num_grad_steps": 2},
    )
    out = tmp_path / "run"
    execute(config, out, device="cpu", catalog=Catalog(get_registry()), progress=False, warn=lambda m: None)
    (record,) = RunStore(out).read_manifest()["jobs"].values()
    assert record["notes"] == {"subjects:test:1": note}
    assert record["skipped"] == {"subjects:test:2": job.skipped["subjects:test:2"]}
    assert "'Big Ben'" in record["skipped"]["subjects:test:2"]
    assert {row["case_id"] for row in RunStore(out).rows()} == {"subjects:test:0", "subjects:test:1"}
