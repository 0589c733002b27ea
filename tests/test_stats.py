"""Second-moment statistics: the value, the cache (hit, miss, key), corpora and `harness stats`."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from harness.api import HarnessError
from harness_plugins.rome_family import second_moment
from harness_plugins.rome_family.command import _layers
from harness_plugins.rome_family.second_moment import (
    StatsConfig,
    cached_layers,
    resolve_corpus,
    second_moments,
)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path))
    monkeypatch.setattr(second_moment, "_MEMO", {})
    return tmp_path


def _corpus_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(
        "The capital of France is Paris.\n\nBerlin is a city in Germany.\n\nA cat is an animal.\n"
    )
    return path


def test_second_moment_matches_a_direct_computation(tiny_llama, home) -> None:
    config = StatsConfig(corpus=str(_corpus_file(home)), samples=3, tokens=32)
    c = second_moments(tiny_llama, [1], config)[1]
    texts = ["The capital of France is Paris.", "Berlin is a city in Germany.", "A cat is an animal."]
    keys = []
    module = tiny_llama.adapter.module(tiny_llama.adapter.mlp_out_name(1))
    hook = module.register_forward_pre_hook(lambda _m, args: keys.append(args[0][0]))
    with torch.no_grad():
        for text in texts:
            tiny_llama.model(**tiny_llama.tokenizer(text, return_tensors="pt"))
    hook.remove()
    k = torch.cat(keys)  # [tokens, d_in]
    torch.testing.assert_close(c, k.T @ k / len(k), rtol=1e-4, atol=1e-6)
    assert torch.allclose(c, c.T)


def test_cache_hit_never_recomputes_and_key_covers_inputs(tiny_llama, home, monkeypatch) -> None:
    config = StatsConfig(samples=4, tokens=16)  # model-sampled default corpus
    calls = []
    real = second_moment._compute
    monkeypatch.setattr(second_moment, "_compute", lambda *a: calls.append(a[1]) or real(*a))
    first = second_moments(tiny_llama, [0, 2], config)
    assert calls == [[0, 2]] and cached_layers(tiny_llama, [0, 1, 2], config) == [0, 2]
    monkeypatch.setattr(second_moment, "_MEMO", {})  # a new process: only the disk cache is left
    again = second_moments(tiny_llama, [2, 0], config)
    assert calls == [[0, 2]]
    assert all(torch.equal(first[i], again[i]) for i in (0, 2))
    second_moments(tiny_llama, [0], StatsConfig(samples=5, tokens=16))  # another sample count: a miss
    assert calls == [[0, 2], [0]]
    assert len(list((home / "stats").iterdir())) == 3


def test_corpus_errors_name_the_problem(tiny_llama, home) -> None:
    with pytest.raises(HarnessError, match="neither 'model'"):
        resolve_corpus(str(home / "missing.txt"), tiny_llama, StatsConfig())
    bad = home / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"body": "no text"}\n')
    corpus = resolve_corpus(str(bad), tiny_llama, StatsConfig())
    with pytest.raises(HarnessError, match=r"bad.jsonl: record 2"):
        corpus.texts(10)
    with pytest.raises(HarnessError, match="dtype"):
        StatsConfig(dtype="float16")


def test_corpus_identity_follows_file_content(tiny_llama, home) -> None:
    path = _corpus_file(home)
    before = resolve_corpus(str(path), tiny_llama, StatsConfig()).identity
    path.write_text("Other text entirely.\n")
    assert resolve_corpus(str(path), tiny_llama, StatsConfig()).identity != before


def test_layers_option_parsing() -> None:
    assert _layers("2,4-6") == [2, 4, 5, 6]
    with pytest.raises(HarnessError, match="--layers"):
        _layers("four")


def test_stats_command_fills_the_cache(tiny_model_dirs, home) -> None:
    from harness.cli import cli

    args = ["stats", "--model", str(tiny_model_dirs["gpt2"]), "--layers", "1-2", "--samples", "4"]
    args += ["--tokens", "16", "--device", "cpu"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "layer 2: C (256, 256)" in result.output and "computed 2 layer(s)" in result.output
    second_moment._MEMO.clear()
    rerun = CliRunner().invoke(cli, args)
    assert "already cached: layer(s) 1, 2" in rerun.output and "computed" not in rerun.output
