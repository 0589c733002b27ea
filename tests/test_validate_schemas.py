"""The shared validation machinery of `harness.schemas`, below the CLI."""

from __future__ import annotations

import pytest

from harness.api import HarnessError, RecordIssue
from harness.schemas import (
    DataFileError,
    format_issues,
    json_path,
    load_schema,
    read_json,
    read_json_records,
    schema_names,
    validate_document,
    validate_records,
)


def test_every_shipped_schema_loads_and_is_a_valid_2020_12_schema():
    from jsonschema import Draft202012Validator

    names = schema_names()
    assert names, "schemas/ ships no *.schema.json"
    for name in names:
        Draft202012Validator.check_schema(load_schema(name))


def test_unknown_schema_lists_the_known_ones():
    with pytest.raises(HarnessError) as info:
        load_schema("no-such-format")
    assert str(info.value).startswith("unknown schema 'no-such-format'; known schemas: ")
    assert all(name in str(info.value) for name in schema_names())


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ((), "$"),
        (("portability", "Reasoning", 0, "ground_truth"), "$.portability.Reasoning[0].ground_truth"),
        (("locality", "Relation Specificity", 2), '$.locality["Relation Specificity"][2]'),
        ((3, "a-b"), '$[3]["a-b"]'),
    ],
)
def test_json_path(parts, expected):
    assert json_path(parts) == expected


def test_read_json_records_reads_lists_and_json_lines(tmp_path):
    (tmp_path / "a.json").write_text('[{"x": 1}, {"x": 2}]')
    (tmp_path / "b.jsonl").write_text('{"x": 1}\n\n{"x": 2}\n')
    assert (
        read_json_records(tmp_path / "a.json")
        == read_json_records(tmp_path / "b.jsonl")
        == [{"x": 1}, {"x": 2}]
    )


def test_a_one_line_jsonl_file_with_a_single_object_is_read_as_json(tmp_path):
    (tmp_path / "spec.json").write_text('{"name": "x"}')
    assert read_json(tmp_path / "spec.json") == {"name": "x"}


def test_data_file_error_keeps_file_and_reason_apart(tmp_path):
    with pytest.raises(DataFileError) as info:
        read_json_records(tmp_path / "gone.json")
    assert (info.value.file, info.value.reason) == (str(tmp_path / "gone.json"), "no such file")
    assert str(info.value) == f"{tmp_path / 'gone.json'}: no such file"


SCHEMA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "kind": {"enum": ["fact", "bio"]}},
    "additionalProperties": False,
}


def test_validate_records_collects_every_problem_in_order():
    issues = validate_records([{"name": "a"}, {"kind": "song"}, "text"], SCHEMA, "f.json")
    assert [str(i) for i in issues] == [
        "f.json: record 1 at $: missing required field 'name'",
        'f.json: record 1 at $.kind: "song" is not one of "fact", "bio"',
        'f.json: record 2 at $: a record must be a JSON object, got string "text"',
    ]


def test_validate_document_has_no_record_index():
    issues = validate_document({"name": "a", "extra": 1}, SCHEMA, "spec.json")
    assert issues == [RecordIssue("spec.json", None, "$", "unexpected field 'extra'")]
    assert str(issues[0]) == "spec.json at $: unexpected field 'extra'"


def test_long_values_are_shortened_in_messages():
    [issue] = validate_records([{"name": "x" * 500}], {"properties": {"name": {"type": "integer"}}}, "f")
    assert issue.message == 'expected integer, got string "' + "x" * 56 + "..."


def test_format_issues_shows_ten_then_counts():
    issues = [RecordIssue("f", i, "$", "bad") for i in range(13)]
    text = format_issues(issues)
    assert text.splitlines()[0] == "f: record 0 at $: bad"
    assert text.splitlines()[-1] == "... and 3 more"
    assert len(text.splitlines()) == 11
    assert format_issues(issues[:10]).count("\n") == 9
    assert format_issues([]) == ""


def test_refs_to_sibling_schema_files_resolve():
    name = schema_names()[0]
    through_ref = validate_document(42, {"$ref": f"{name}.schema.json"}, "x.json")
    assert through_ref and through_ref == validate_document(42, name, "x.json")
