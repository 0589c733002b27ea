"""`harness validate` with the built-in formats: every missing field named once, blank subjects
refused in every format that has a subject, and a file in another known format named as such."""

from __future__ import annotations

import json

import pytest
from cli_helpers import run_main

ZSRE = {
    "subject": "Watts Humphrey",
    "prompt": "What university did Watts Humphrey attend?",
    "target_new": "University of Michigan",
    "ground_truth": ["Trinity College"],
    "rephrase_prompt": "What university did Watts Humphrey take part in?",
}
MEND = {
    "subject": "Watts Humphrey",
    "src": "What university did Watts Humphrey attend?",
    "alt": "University of Michigan",
    "answers": ["Trinity College"],
    "rephrase": "What university did Watts Humphrey take part in?",
    "loc": "nq question: who played desmond doss father in hacksaw ridge",
    "loc_ans": "Hugo Weaving",
    "cond": "Trinity College >> University of Michigan || What university did Watts Humphrey attend?",
}
ROME_REWRITE = {"prompt": "{} is located in", "subject": "The Eiffel Tower", "target_new": {"str": "Rome"}}
#: A valid record of every built-in format that has a subject, and where the subject sits in it.
WITH_SUBJECT = {
    "zsre": (ZSRE, ("subject",)),
    "zsre_mend": (MEND, ("subject",)),
    "wiki_recent": (
        {"subject": "France", "prompt": "The capital of France is", "target_new": "Lyon"},
        ("subject",),
    ),
    "wiki_counterfact": (
        {
            "subject": "France",
            "prompt": "The capital of France is",
            "target_new": "Lyon",
            "ground_truth": "Paris",
        },
        ("subject",),
    ),
    "easyedit_counterfact": (
        {
            "subject": "France",
            "prompt": "The capital of France is",
            "target_new": "Lyon",
            "ground_truth": "Paris",
        },
        ("subject",),
    ),
    "counterfact": (
        {"case_id": 0, "requested_rewrite": {**ROME_REWRITE, "target_true": {"str": "Paris"}}},
        ("requested_rewrite", "subject"),
    ),
    "mquake": (
        {
            "case_id": 1,
            "requested_rewrite": [{**ROME_REWRITE, "target_true": {"str": "Paris"}, "question": "Where?"}],
            "questions": ["In which city is the Eiffel Tower?"],
            "new_answer": "Rome",
            "answer": "Paris",
        },
        ("requested_rewrite", 0, "subject"),
    ),
    "wise_hallucination": (
        {
            "subject": "Ada",
            "prompt": "Ada was born in",
            "target_new": "London",
            "locality_prompt": "x",
            "locality_ground_truth": "y",
        },
        ("subject",),
    ),
    "wise_temporal": (
        {"subject": "Ada", "prompt": "Ada", "target_new": "Ada was a mathematician.", "ood_rephrase": "Ada"},
        ("subject",),
    ),
}


def validate(capsys, path, *options: str) -> tuple[int, list[str], str]:
    """Exit code, the problem lines (stdout) and the notes and summary (stderr)."""
    code, out, err = run_main(capsys, "validate", str(path), *options)
    return code, out.splitlines(), err


def write(tmp_path, records, name: str = "records.json"):
    path = tmp_path / name
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def test_a_mend_file_given_to_zsre_names_every_missing_field_and_the_format_it_is_in(capsys, tmp_path):
    path = write(
        tmp_path, [MEND, {**MEND, "subject": "Ramalinaceae", "src": "Which family is Ramalinaceae in?"}]
    )
    code, out, err = validate(capsys, path, "--task", "zsre")
    assert code == 1
    missing = "missing required fields 'prompt', 'target_new', 'ground_truth', 'rephrase_prompt'"
    assert out == [f"{path}: record 0 at $: {missing}", f"{path}: record 1 at $: {missing}"]
    assert (
        f"{path}: these are not records of task 'zsre', but every record fits format 'zsre_mend' "
        "(--task zsre_mend): did you mean that?"
    ) in err
    assert err.strip().endswith("invalid, 2 problems in 2 records")
    assert validate(capsys, path, "--task", "zsre_mend")[0] == 0
    assert "inferred records in format 'zsre_mend'" in validate(capsys, path)[2]


def test_one_missing_field_is_named_alone_and_a_partly_valid_file_gets_no_other_format(capsys, tmp_path):
    """A ZsRE file with one faulty record is a ZsRE file with a fault: looser formats it may fit
    are not suggested."""
    no_rephrase = {k: v for k, v in ZSRE.items() if k != "rephrase_prompt"}
    path = write(tmp_path, [ZSRE, no_rephrase])
    code, out, err = validate(capsys, path, "--task", "zsre")
    assert code == 1 and out == [f"{path}: record 1 at $: missing required field 'rephrase_prompt'"]
    assert "fits" not in err


@pytest.mark.parametrize("record_format", sorted(WITH_SUBJECT))
@pytest.mark.parametrize("blank", ["", " ", "\t\n"])
def test_a_blank_subject_is_refused_in_every_format_that_has_one(capsys, tmp_path, record_format, blank):
    record, where = WITH_SUBJECT[record_format]
    path = write(tmp_path, [record])
    assert validate(capsys, path, "--task", record_format)[:2] == (
        0,
        [f"{path}: valid records of task {record_format!r}"],
    )
    bad = json.loads(json.dumps(record))
    holder = bad
    for key in where[:-1]:
        holder = holder[key]
    holder[where[-1]] = blank
    path = write(tmp_path, [record, bad])
    code, out, _ = validate(capsys, path, "--task", record_format)
    json_path = "$" + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in where)
    assert code == 1 and out == [
        f"{path}: record 1 at {json_path}: must not be blank, got {json.dumps(blank)}"
    ]


def test_a_sanitation_item_may_leave_its_subject_out_but_not_blank(capsys, tmp_path):
    item = {"question": "What type of creature is the Australian currawong?", "ground_truth": "Birds"}
    path = write(tmp_path, {"K_F": [item, {**item, "subject": "currawong"}], "K_R": [item]})
    assert validate(capsys, path, "--task", "sanitation")[0] == 0
    path = write(tmp_path, {"K_F": [item, {**item, "subject": " "}], "K_R": [item]})
    code, out, _ = validate(capsys, path, "--task", "sanitation")
    assert code == 1 and len(out) == 1 and out[0].endswith('subject: must not be blank, got " "')


def test_inference_names_the_format_whose_fields_the_records_carry(capsys, tmp_path):
    """ZsRE records with a blank subject fit no format; the closest is ZsRE (whose required fields
    they all carry), not a looser format that names as many of their fields."""
    path = write(tmp_path, [ZSRE, {**ZSRE, "subject": " "}])
    code, out, err = validate(capsys, path)
    assert code == 1 and out == [f'{path}: record 1 at $.subject: must not be blank, got " "']
    assert "closest is records in format 'zsre' " in err
