"""Tiny random models for tests, built in about a second: importable without pytest, so that a
benchmark or a script can use them too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def _config(family: str, vocab_size: int, tokenizer, sizes: dict[str, Any]):
    from transformers import GPT2Config, LlamaConfig

    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    if family == "llama":
        llama = {
            "vocab_size": vocab_size,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 256,
            "tie_word_embeddings": True,
        }
        return LlamaConfig(**{**llama, **sizes}, **ids)
    gpt2 = {"vocab_size": vocab_size, "n_embd": 64, "n_layer": 4, "n_head": 4, "n_positions": 256}
    return GPT2Config(**{**gpt2, **sizes}, **ids)


def build_tiny_model(folder: str | Path, family: str = "llama", *, seed: int = 0, **sizes: Any) -> Path:
    """Write a tiny random model of `family` ("llama" or "gpt2") with its tokenizer to `folder`,
    loadable with `harness.models.load_model(folder)` like any real model folder.

    `sizes` override the config (transformers' names, e.g. `hidden_size=576, num_hidden_layers=30`
    for a random model of SmolLM2-135M's shape, to time methods where real weights cannot go); a
    `vocab_size` above the tokenizer's leaves the extra rows unused."""
    import torch
    from transformers import AutoModelForCausalLM

    if family not in FAMILIES:
        raise ValueError(f"unknown tiny model family {family!r}; choose from {', '.join(FAMILIES)}")
    folder = Path(folder)
    tokenizer = _train_tokenizer(family)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config(family, len(tokenizer), tokenizer, sizes))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
