"""`harness validate` with the built-in tasks: dataset specs, and format inference on real records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import run_main
from shared_data import KNOWEDIT

FACT = {"subject": "France", "prompt": "The capital of France is", "target_new": "Lyon"}


def validate(capsys, path) -> tuple[int, str, str]:
    code, out, err = run_main(capsys, "validate", str(path))
    return code, out.strip(), err.strip()


def write_spec(folder: Path, records, **spec) -> Path:
    (folder / "facts.json").write_text(json.dumps(records))
    path = folder / "spec.json"
    path.write_text(json.dumps({"name": "capitals", "files": {"test": "facts.json"}, **spec}))
    return path


def test_a_valid_dataset_spec_and_its_data_file(capsys, tmp_path):
    path = write_spec(tmp_path, [FACT], record_format="wiki_recent")
    assert validate(capsys, path)[:2] == (0, f"{path}: valid dataset spec (1 data file checked)")


def test_a_spec_with_a_field_mapping_checks_the_mapped_records(capsys, tmp_path):
    records = [
        {"who": "France", "q": "The capital of France is", "new": "Lyon"},
        {"who": "Spain", "q": "The capital of Spain is"},
    ]
    path = write_spec(tmp_path, records, fields={"subject": "who", "prompt": "q", "target_new": "new"})
    code, out, _ = validate(capsys, path)
    assert code == 1
    assert out == f"{tmp_path / 'facts.json'}: record 1 at $: missing required field 'target_new'"


def test_an_invalid_spec_names_the_field(capsys, tmp_path):
    path = write_spec(tmp_path, [FACT], record_format="wiki_recent")
    spec = {"name": "two words", "files": {"test": "facts.json"}, "record_format": "zsre"}
    path.write_text(json.dumps(spec))
    code, out, _ = validate(capsys, path)
    assert code == 1
    assert out.startswith(f"{path} at $.name: ") and "does not match" in out


def test_a_spec_whose_data_file_is_missing(capsys, tmp_path):
    path = write_spec(tmp_path, [FACT], record_format="wiki_recent")
    (tmp_path / "facts.json").unlink()
    assert validate(capsys, path)[:2] == (1, f"{tmp_path / 'facts.json'}: no such file")


@pytest.mark.skipif(not KNOWEDIT.is_dir(), reason="the shared KnowEdit data is not on this machine")
def test_real_zsre_records_are_inferred_as_zsre_not_as_the_looser_fact_formats(capsys, tmp_path):
    records = json.loads((KNOWEDIT / "ZsRE" / "ZsRE-test-all.json").read_text())[:30]
    path = tmp_path / "zsre-sample.json"
    path.write_text(json.dumps(records))
    code, out, err = validate(capsys, path)
    assert (code, out) == (0, f"{path}: valid records in format 'zsre' (tasks: mini_zsre, zsre)")
    assert "also fit 'wiki_counterfact', 'wiki_recent'" in err
