"""Second-moment statistics C = E[k kᵀ] of the MLP down-projection input, as a managed artifact.

ROME (with its covariance adjustment), MEMIT and their relatives need C per edited layer. The
reference toolkit computes it from 100,000 Wikipedia articles after downloading the whole dump, with
no fallback offline. Here C is computed from a corpus the user names, or by default from text the
model itself samples with a fixed seed (offline, and drawn from the distribution the model
actually sees keys from), and stored on disk under a content key of everything that determines it:
model fingerprint, layer, corpus identity, sample count, tokens per sample and dtype. A rerun with
the same inputs never recomputes; `harness stats` fills the cache ahead of a run.

Corpus specs:
    "model"                 text sampled from the model (the default)
    PATH                    a .txt file (one sample per blank-line-separated paragraph), a .jsonl
                            file (field "text"), or a folder of those
    datasets:ID[:CONFIG]    a Hugging Face `datasets` id, split "train", field "text" (online)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from harness.api import (
    TORCH_CODEC,
    ArtifactCache,
    HarnessError,
    capture_modules,
    content_key,
    encode_prompts,
)

if TYPE_CHECKING:
    from harness.api import ModelHandle

MODEL_CORPUS = "model"
#: Openers for model-sampled text: varied starts give varied text without any outside data.
_OPENERS = ("The", "In", "A", "It", "When", "This", "He", "She", "After", "There", "We", "On")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_MEMO: dict[str, torch.Tensor] = {}
#: The hyperparameters a method that needs C takes for it (read by `stats_config`).
MOM2_SCHEMA: dict[str, Any] = {
    "mom2_corpus": {"type": "string", "default": MODEL_CORPUS},
    "mom2_samples": {"type": "integer", "minimum": 1, "default": 256},
    "mom2_tokens": {"type": "integer", "minimum": 2, "default": 128},
    "mom2_dtype": {"enum": sorted(_DTYPES), "default": "float32"},
}


@dataclass(frozen=True)
class StatsConfig:
    """What determines a statistic besides the model and the layer.

    samples: number of texts; tokens: each text is cut to this many tokens. The defaults (256 x 128
    = up to 32k token positions) give a full-rank C for MLP inputs up to a few thousand wide in
    well under a minute on a laptop CPU for a 135M model; raise them for larger models or when
    edits should disturb unrelated text less (more samples = a better estimate of C)."""

    corpus: str = MODEL_CORPUS
    samples: int = 256
    tokens: int = 128
    dtype: str = "float32"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise HarnessError(f"statistics dtype must be one of {', '.join(_DTYPES)}, got {self.dtype!r}")
        if self.samples < 1 or self.tokens < 2:
            raise HarnessError(
                f"statistics need samples >= 1 and tokens >= 2, got {self.samples}, {self.tokens}"
            )


def stats_config(hparams: Mapping[str, Any]) -> StatsConfig:
    """The statistics a method's resolved hyperparameters (with `MOM2_SCHEMA`'s keys) ask for."""
    return StatsConfig(
        corpus=hparams["mom2_corpus"],
        samples=hparams["mom2_samples"],
        tokens=hparams["mom2_tokens"],
        dtype=hparams["mom2_dtype"],
    )


@dataclass(frozen=True)
class Corpus:
    """A text source: `identity` names its content exactly (it goes into cache keys)."""

    identity: str
    texts: Callable[[int], list[str]]


def resolve_corpus(spec: str, handle: ModelHandle, config: StatsConfig) -> Corpus:
    """Turn a corpus spec into a text source; an unusable spec is an error that says what to pass."""
    if spec == MODEL_CORPUS:
        return Corpus(
            identity=f"model-samples:v1:seed={config.seed}:tokens={config.tokens}",
            texts=lambda n: _model_texts(handle, n, config),
        )
    if spec.startswith("datasets:"):
        return _datasets_corpus(spec.removeprefix("datasets:"), config.seed)
    path = Path(spec).expanduser()
    if not path.exists():
        raise HarnessError(
            f"statistics corpus {spec!r} is neither {MODEL_CORPUS!r}, a file or folder that exists, "
            "nor 'datasets:ID[:CONFIG]'"
        )
    files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl")) if path.is_dir() else [path]
    if not files:
        raise HarnessError(f"statistics corpus folder {path} holds no .txt or .jsonl file")
    digest = content_key(
        *[(str(f.relative_to(path) if path.is_dir() else f.name), f.read_bytes().hex()) for f in files]
    )
    return Corpus(identity=f"files:{digest}", texts=lambda n: _file_texts(files, n))


def _file_texts(files: Sequence[Path], n: int) -> list[str]:
    texts: list[str] = []
    for file in files:
        if file.suffix == ".jsonl":
            for number, line in enumerate(file.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    text = json.loads(line)["text"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise HarnessError(
                        f"{file}: record {number}: expected a JSON object with a 'text' field"
                    ) from None
                texts.append(str(text))
        else:
            texts.extend(part.strip() for part in file.read_text().split("\n\n"))
    texts = [t for t in texts if t]
    if not texts:
        raise HarnessError(f"statistics corpus {', '.join(map(str, files))} holds no text")
    return texts[:n]


def _datasets_corpus(spec: str, seed: int) -> Corpus:
    name, _, config = spec.partition(":")

    def texts(n: int) -> list[str]:
        import datasets

        try:
            stream = datasets.load_dataset(name, config or None, split="train", streaming=True)
        except Exception as exc:
            raise HarnessError(
                f"cannot load the statistics corpus datasets:{spec} ({exc}); offline, pass a local text "
                f"file or folder, or the default corpus {MODEL_CORPUS!r}"
            ) from None
        rows = stream.shuffle(seed=seed, buffer_size=10_000)
        return [row["text"] for row in _take_nonempty(rows, n)]

    return Corpus(identity=f"datasets:{name}:{config}:train:text:shuffle={seed}", texts=texts)


def _take_nonempty(rows: Iterable[dict], n: int) -> list[dict]:
    taken = []
    for row in rows:
        if str(row.get("text", "")).strip():
            taken.append(row)
            if len(taken) == n:
                break
    return taken


@torch.no_grad()
def sample_texts(handle: ModelHandle, openers: list[str], *, max_new_tokens: int, top_k: int) -> list[str]:
    """Top-k samples continuing each opener, decoded with the opener: the model's own text, for
    corpora and context templates alike. The caller owns the seed."""
    batch = encode_prompts(handle.tokenizer, openers).to(handle.device)
    out = handle.model.generate(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        do_sample=True,
        top_k=top_k,
        max_new_tokens=max_new_tokens,
        pad_token_id=handle.tokenizer.pad_token_id,
    )
    return handle.tokenizer.batch_decode(out, skip_special_tokens=True)


@torch.no_grad()
def _model_texts(handle: ModelHandle, n: int, config: StatsConfig) -> list[str]:
    """`n` texts sampled from the model (top-k 50), seeded, cached per model fingerprint."""

    def sample() -> list[str]:
        texts: list[str] = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            for start in range(0, n, 32):
                openers = [_OPENERS[i % len(_OPENERS)] for i in range(start, min(n, start + 32))]
                texts.extend(sample_texts(handle, openers, max_new_tokens=config.tokens, top_k=50))
        return texts

    key = content_key("model-texts", handle.fingerprint(), n, config.tokens, config.seed)
    return ArtifactCache("corpora").get_or_compute(key, sample)


def stats_key(handle: ModelHandle, layer: int, corpus: Corpus, config: StatsConfig) -> str:
    return content_key(
        "mom2", handle.fingerprint(), handle.adapter.mlp_out_name(layer), corpus.identity,
        config.samples, config.tokens, config.dtype,
    )  # fmt: skip


#: One file per statistic: {"c": C, "identity": the corpus identity, "samples": the sample count}.
_STATS: ArtifactCache[dict[str, Any]] = ArtifactCache("stats", TORCH_CODEC)


def cached_layers(handle: ModelHandle, layers: Sequence[int], config: StatsConfig) -> list[int]:
    """The layers whose statistic is already on disk for this model, corpus and config."""
    corpus = resolve_corpus(config.corpus, handle, config)
    return [layer for layer in layers if _STATS.path(stats_key(handle, layer, corpus, config)).exists()]


def second_moments(
    handle: ModelHandle, layers: Sequence[int], config: StatsConfig = StatsConfig(), *, progress: bool = False
) -> dict[int, torch.Tensor]:
    """C [d_in, d_in] for each layer, from memory, disk, or one shared pass over the corpus."""
    corpus = resolve_corpus(config.corpus, handle, config)
    keys = {layer: stats_key(handle, layer, corpus, config) for layer in dict.fromkeys(layers)}
    result: dict[int, torch.Tensor] = {}
    for layer, key in keys.items():
        if key not in _MEMO and (stored := _STATS.load(key)) is not None:
            _MEMO[key] = stored["c"]
        if key in _MEMO:
            result[layer] = _MEMO[key]
    missing = [layer for layer in keys if layer not in result]
    if missing:
        computed = _compute(handle, missing, corpus.texts(config.samples), config, progress)
        for layer, c in computed.items():
            _STATS.store(keys[layer], {"c": c, "identity": corpus.identity, "samples": config.samples})
            _MEMO[keys[layer]] = result[layer] = c
    return result


@torch.no_grad()
def _compute(
    handle: ModelHandle, layers: Sequence[int], texts: Sequence[str], config: StatsConfig, progress: bool
) -> dict[int, torch.Tensor]:
    """Σ k kᵀ / count over every non-padding token of `texts`, per layer, in one pass that stops at
    the deepest layer asked for (the layers above it would be wasted work)."""
    if not texts:
        raise HarnessError("the statistics corpus yielded no text")
    dtype = _DTYPES[config.dtype]
    width = handle.adapter.intermediate_size
    sums = {layer: torch.zeros(width, width, dtype=dtype, device=handle.device) for layer in layers}
    count = 0
    names = {layer: handle.adapter.mlp_out_name(layer) for layer in layers}
    ordered = sorted(texts, key=len)
    batch_size = max(1, 4096 // config.tokens)
    with capture_modules(handle, list(names.values()), inputs=True, stop_early=True) as seen:
        for start in tqdm(range(0, len(ordered), batch_size), desc="second moments", disable=not progress):
            batch = handle.tokenizer(
                list(ordered[start : start + batch_size]),
                truncation=True,
                max_length=config.tokens,
                padding=True,
                padding_side="right",
                return_tensors="pt",
            ).to(handle.device)
            mask = batch["attention_mask"].bool()
            count += int(mask.sum())
            seen.clear()
            seen.forward(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
            )
            for layer, name in names.items():
                keys = seen.inputs[name][0][mask].to(dtype)  # [tokens, d_in]
                sums[layer].add_(keys.T @ keys)
    return {layer: (s / count).to(torch.float32).cpu() for layer, s in sums.items()}
