"""`harness validate` on malformed and valid input: every problem is one clear line naming the
file, the record and the JSON path; exit 1 when invalid, 0 when valid; never a traceback.

The fixture plugins provide the tasks (`fixture-facts`, `fixture-bios`) and the built-in tasks are
disabled, so that format inference here depends on nothing that other tests change.
"""

from __future__ import annotations

import gzip
import json

import pytest
from cli_helpers import run_main
from fixtures import use_fixture_plugins

GOOD_FACT = {"fact_prompt": "The capital of France is", "fact_answer": "Paris"}
GOOD_BIO = {"person": "Ada Lovelace", "biography": "Ada Lovelace was a mathematician."}


@pytest.fixture(autouse=True)
def registry(request, monkeypatch):
    return use_fixture_plugins(request, monkeypatch, disabled=("builtin_tasks", "fixture_dup"))


def validate(capsys, path, *options: str) -> tuple[int, list[str], str]:
    """Exit code, the problem lines (stdout) and the summary (stderr) of `harness validate`."""
    code, out, err = run_main(capsys, "validate", str(path), *options)
    return code, out.splitlines(), err


def write(tmp_path, name: str, content: str | bytes):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


FACTS = ("--task", "fixture-facts")

# (file name, content, options, the one line `harness validate` must print after "<file>: ")
MALFORMED = [
    ("empty.json", "", FACTS, "is empty"),
    ("blank.json", "  \n\n ", FACTS, "is empty"),
    (
        "truncated.json",
        '[{"fact_prompt": "a", "fact_answer": "b"}, {"fact_prompt": ',
        FACTS,
        "invalid JSON at line 1, column 60: Expecting value (the file looks truncated)",
    ),
    (
        "trailing.json",
        '[\n  {"fact_prompt": "a", "fact_answer": "b"},\n]',
        FACTS,
        "invalid JSON at line 3, column 1: Expecting value (a trailing comma?)",
    ),
    (
        "single-quotes.json",
        "[{'fact_prompt': 'a'}]",
        FACTS,
        "invalid JSON at line 1, column 3: Expecting property name enclosed in double quotes",
    ),
    (
        "object.json",
        json.dumps({"data": [GOOD_FACT]}),
        FACTS,
        "holds a JSON object where a list of records is due (did you mean the list under 'data'?)",
    ),
    ("string.json", '"fact_prompt"', FACTS, "holds a JSON string where a list of records is due"),
    ("null.json", "null", (), "holds a JSON null where a list of records is due"),
    ("number.json", "42", (), "holds a JSON number where a list of records is due"),
    ("empty-list.json", "[]", FACTS, "holds no records (an empty list)"),
    (
        "bad-line.jsonl",
        json.dumps(GOOD_FACT) + "\n{fact_prompt: 1}\n",
        FACTS,
        "JSON Lines line 2 is not valid JSON (column 2: Expecting property name enclosed in double quotes)",
    ),
    ("binary.json", b"\x00\x01\x02\x03PK", FACTS, "is a binary file, not JSON text"),
    (
        "latin1.json",
        '[{"fact_prompt": "café"}]'.encode("latin-1"),
        FACTS,
        "is not UTF-8 text (undecodable byte at offset 21)",
    ),
    ("packed.json.gz", gzip.compress(b"[]"), FACTS, "is gzip-compressed; decompress it first"),
    (
        "not-a-record.json",
        json.dumps([7]),
        FACTS,
        "record 0 at $: a record must be a JSON object, got number 7",
    ),
    (
        "list-record.json",
        json.dumps([["a"]]),
        FACTS,
        'record 0 at $: a record must be a JSON object, got list ["a"]',
    ),
    (
        "missing.json",
        json.dumps([GOOD_FACT, {"fact_prompt": "x"}]),
        FACTS,
        "record 1 at $: missing required field 'fact_answer'",
    ),
    (
        "wrong-type.json",
        json.dumps([{"fact_prompt": 5, "fact_answer": "b"}]),
        FACTS,
        "record 0 at $.fact_prompt: expected string, got number 5",
    ),
    (
        "empty-string.json",
        json.dumps([{"fact_prompt": "", "fact_answer": "b"}]),
        FACTS,
        "record 0 at $.fact_prompt: must not be an empty string",
    ),
    (
        "answers.json",
        json.dumps([{**GOOD_FACT, "fact_answer": [["nested"]]}]),
        FACTS,
        'record 0 at $.fact_answer: expected a string; or a list of strings; got list [["nested"]]',
    ),
    (
        "nested.json",
        json.dumps([{**GOOD_FACT, "probes": {"Subject Aliasing": [{"prompt": "p", "answer": 3}]}}]),
        FACTS,
        'record 0 at $.probes["Subject Aliasing"][0].answer: expected string, got number 3',
    ),
]


@pytest.mark.parametrize(("name", "content", "options", "expected"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_input_gives_one_clear_line(capsys, tmp_path, name, content, options, expected):
    path = write(tmp_path, name, content)
    code, lines, _ = validate(capsys, path, *options)
    assert code == 1
    assert lines == [f"{path}: {expected}"]


def test_missing_file_and_directory(capsys, tmp_path):
    code, lines, _ = validate(capsys, tmp_path / "absent.json")
    assert (code, lines) == (1, [f"{tmp_path / 'absent.json'}: no such file"])
    code, lines, _ = validate(capsys, tmp_path, *FACTS)
    assert (code, lines) == (1, [f"{tmp_path}: is a directory, not a file"])


def test_unknown_task_is_a_one_line_error(capsys, tmp_path):
    path = write(tmp_path, "facts.json", json.dumps([GOOD_FACT]))
    code, lines, err = validate(capsys, path, "--task", "nope")
    assert code == 1 and lines == []
    assert err.startswith("harness: error: unknown task 'nope'; known tasks: ")
    assert "fixture-bios, fixture-facts" in err
    assert len(err.splitlines()) == 1


def test_many_bad_records_are_summarized(capsys, tmp_path):
    path = write(tmp_path, "many.json", json.dumps([{"fact_prompt": "x"}] * 25))
    code, lines, err = validate(capsys, path, *FACTS)
    assert code == 1
    assert lines[:10] == [f"{path}: record {i} at $: missing required field 'fact_answer'" for i in range(10)]
    assert lines[10:] == ["... and 15 more"]
    assert err.strip() == f"{path}: invalid, 25 problems in 25 records"


def test_all_flag_prints_every_problem(capsys, tmp_path):
    path = write(tmp_path, "many.json", json.dumps([{"fact_prompt": "x"}] * 12))
    code, lines, _ = validate(capsys, path, *FACTS, "--all")
    assert code == 1 and len(lines) == 12


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("facts.json", json.dumps([GOOD_FACT, {**GOOD_FACT, "fact_answer": ["Paris", "City of Light"]}])),
        ("facts.jsonl", "\n".join(json.dumps(r) for r in [GOOD_FACT, GOOD_FACT]) + "\n"),
        ("facts-no-suffix.txt", "\n".join(json.dumps(r) for r in [GOOD_FACT, GOOD_FACT])),
        ("bom.json", "\ufeff" + json.dumps([GOOD_FACT])),
    ],
)
def test_valid_files_pass_with_task(capsys, tmp_path, name, content):
    path = write(tmp_path, name, content)
    code, lines, _ = validate(capsys, path, *FACTS)
    assert (code, lines) == (0, [f"{path}: valid records of task 'fixture-facts'"])


def test_format_is_inferred_without_task(capsys, tmp_path):
    path = write(tmp_path, "bios.json", json.dumps([GOOD_BIO]))
    code, lines, err = validate(capsys, path)
    assert code == 0
    assert lines == [f"{path}: valid records in format 'fixture-bios' (tasks: fixture-bios)"]
    assert "inferred records in format 'fixture-bios'" in err


def test_a_file_fitting_no_format_reports_the_closest(capsys, tmp_path):
    path = write(tmp_path, "almost.json", json.dumps([GOOD_FACT, {"fact_prompt": "x"}]))
    code, lines, err = validate(capsys, path)
    assert code == 1
    assert lines == [f"{path}: record 1 at $: missing required field 'fact_answer'"]
    assert "fits no registered format; closest is records in format 'fixture-facts'" in err
    assert "pass --task NAME" in err


def test_a_record_type_error_is_reported_without_a_format(capsys, tmp_path):
    path = write(tmp_path, "scalars.json", json.dumps([1, 2]))
    code, lines, _ = validate(capsys, path)
    assert code == 1
    assert lines[0] == f"{path}: record 0 at $: a record must be a JSON object, got number 1"
