"""`harness list KIND NAME`: one method's hyperparameters with their defaults for a model, one
task's format and metrics, one metric's unit and direction."""

from __future__ import annotations

import json

from click.testing import CliRunner

from harness.api import HarnessError
from harness.cli import cli
from harness.hparams import resolve_hparams
from harness.plugins import get_registry


def listed(*args: str) -> dict:
    result = CliRunner().invoke(cli, ["list", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def by_name(detail: dict) -> dict[str, dict]:
    return {h["name"]: h for h in detail["hyperparameters"]}


def test_method_defaults_for_a_model_are_those_a_run_on_it_resolves(tiny_model_dirs, tiny_llama):
    detail = listed("methods", "memit", "--model", str(tiny_model_dirs["llama"]))
    assert detail["capabilities"] == {
        "batch": True,
        "sequential": True,
        "needs_training": False,
        "edits_weights": True,
    }
    assert "mom2_update_weight" in detail["tuning_hint"]
    assert detail["model_note"] == "llama family, 4 layers"
    resolved = resolve_hparams(get_registry().methods.load("memit")(), tiny_llama, {})
    hparams = by_name(detail)
    assert set(hparams) == set(resolved)
    assert {k: h["default"] for k, h in hparams.items()} == json.loads(json.dumps(resolved))
    assert hparams["layers"]["default_from"] == "model" and hparams["v_lr"]["default_from"] == "schema"
    assert hparams["layers"]["type"] == "array of integer"


def test_model_dependent_defaults_are_not_guessed_when_the_config_is_not_here(tmp_path):
    detail = listed("methods", "rome", "--model", "nobody/not-downloaded")
    assert detail["model_note"].startswith("model-dependent defaults unknown")
    layers = by_name(detail)["layers"]
    assert (layers["default"], layers["default_from"]) == (None, "depends on the model")
    text = CliRunner().invoke(cli, ["list", "methods", "rome", "--model", "nobody/not-downloaded"]).stdout
    assert "defaults for nobody/not-downloaded (model-dependent defaults unknown" in text
    assert "to tune when edits do not take: layers" in text and "--set rome.KEY=VALUE" in text


def test_a_method_without_knobs_has_no_table_and_no_tuning_advice():
    text = CliRunner().invoke(cli, ["list", "methods", "ice"]).stdout
    assert "hyperparameters: none" in text and "to tune" not in text


def test_task_and_metric_details():
    task = listed("tasks", "mini_zsre")
    assert (task["record_format"], task["splits"]) == ("zsre", ["test"])
    assert task["metrics"][:2] == ["edit_succ", "generalization"]
    fluency = listed("metrics", "fluency")
    assert (fluency["unit"], fluency["higher_is_better"], fluency["shown"]) == ("bits", True, "as it is")
    assert fluency["options"]["fluency_top_k"] == 5
    text = CliRunner().invoke(cli, ["list", "metrics", "edit_succ"]).stdout
    assert "unit: fraction (shown x100 in tables), higher is better" in text


def test_an_unknown_name_is_refused_with_the_closest_one():
    result = CliRunner().invoke(cli, ["list", "methods", "memt"])
    assert isinstance(result.exception, HarnessError)
    assert "unknown method 'memt' (did you mean 'memit'?)" in str(result.exception)
