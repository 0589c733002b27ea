"""Knowledge locating: causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations
in GPT", Sec. 2.1) and the overlap of the layers it finds for related facts (the KnowEdit study's
RSim, Zhang et al. 2024, Sec. 5).

Causal tracing runs a prompt three ways: clean; corrupted, with Gaussian noise ε ~ N(0, ν²)
added to the input embeddings of the subject's tokens (ν = 3σ, σ the standard deviation of the
model's embedding entries; the paper takes σ over subject embeddings of its data set); and
corrupted but with one layer's clean hidden state restored at one token. The effect of a layer is
the probability of the clean prediction o (the clean run's top token) with that state restored,
minus its probability in the corrupted run, averaged over noise samples (the paper's indirect
effect, IE = P*_{clean h_i^l}[o] − P*[o]). Restoring every layer at every token gives the clean
run back exactly, since the last layer's states are then the clean ones.

RSim of two facts at k: the Jaccard overlap |A_k ∩ B_k| / |A_k ∪ B_k| of the k layers of largest
effect of each (our reading of the study's "relative similarity" of located regions; the study
reports that the regions of related and unrelated facts overlap alike, so locating does not single
out a fact).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from harness.api import HarnessError, capture_modules, encode_prompts, trim_prompt
from harness_plugins.rome_family.keys import locate_subject

#: ν = NOISE_SCALE · σ (the paper's choice).
NOISE_SCALE = 3.0
#: Noise samples per trace (the paper's 10).
SAMPLES = 10


@dataclass(frozen=True)
class Trace:
    """One fact's trace: `prompt`, `tokens` (each prompt token decoded), `subject` (its token positions, a
    range), `answer_id` / `answer` (the clean top token), `clean` / `corrupted` (the answer's
    probability), `by_layer` [layers] (the effect of each layer restored at the subject's last
    token) and, when every token was traced, `grid` [layers, tokens] (each layer at each token)."""

    prompt: str
    tokens: list[str]
    subject: range
    answer_id: int
    answer: str
    clean: float
    corrupted: float
    by_layer: torch.Tensor
    grid: torch.Tensor | None = None

    def top_layers(self, k: int) -> set[int]:
        """The k layers of largest effect at the subject's last token."""
        return set(self.by_layer.topk(k).indices.tolist())


def rsim(a: Trace, b: Trace, k: int) -> float:
    """Jaccard overlap of the top-k layers of two traces."""
    first, second = a.top_layers(k), b.top_layers(k)
    return len(first & second) / len(first | second)


def embedding_noise(handle) -> float:
    """ν = NOISE_SCALE · σ of the input embedding matrix's entries."""
    weight = handle.adapter.module(handle.adapter.embed_name).weight
    return NOISE_SCALE * float(weight.detach().float().std())


def subject_tokens(tokenizer, prompt: str, subject: str) -> range:
    """The token positions of `subject` in `prompt` (encoded as the harness encodes prompts).
    Raises HarnessError when the subject does not locate once in the prompt."""
    text = trim_prompt(prompt)
    span = locate_subject(text, subject)
    offsets = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True).offset_mapping
    inside = [i for i, (lo, hi) in enumerate(offsets) if hi > lo and lo < span.end and hi > span.start]
    if not inside:
        raise HarnessError(f"no token of {text!r} covers the subject {subject!r}")
    return range(inside[0], inside[-1] + 1)


class Tracer:
    """Forward passes of one fact's prompt (one row, so never padded): clean, or with noise on the
    subject's embeddings and clean states restored where asked, a pass holding several
    restorations, each on its own rows, one row per noise sample. `noise` is ν (default
    `embedding_noise(handle)`), `seed` fixes ε. Raises HarnessError when the subject does not
    locate once in the prompt."""

    def __init__(
        self,
        handle,
        prompt: str,
        subject: str,
        *,
        samples: int = SAMPLES,
        seed: int = 0,
        noise: float | None = None,
    ) -> None:
        self.handle = handle
        self.adapter = handle.adapter
        self.batch = encode_prompts(handle.tokenizer, [prompt]).to(handle.device)
        self.positions = subject_tokens(handle.tokenizer, prompt, subject)
        self.subject = list(self.positions)
        scale = embedding_noise(handle) if noise is None else noise
        generator = torch.Generator().manual_seed(seed)
        epsilon = torch.randn(samples, len(self.subject), self.adapter.hidden_size, generator=generator)
        self.noise = (epsilon * scale).to(handle.device)  # [samples, subject tokens, d]
        self.layers = [self.adapter.layer_name(i) for i in range(self.adapter.num_layers)]

    @torch.no_grad()
    def clean(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Next-token probabilities [vocab] and every layer's output [tokens, d] of the clean run."""
        with capture_modules(self.handle, self.layers, outputs=True) as seen:
            logits = self.handle.model(**self.batch.model_inputs(), use_cache=False).logits
        states = [seen.outputs[name][0][0].clone() for name in self.layers]
        return logits[0, -1].float().softmax(-1), states

    @torch.no_grad()
    def patched(
        self, groups: Sequence[Mapping[int, Sequence[int]]], clean_states: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """Next-token probabilities [len(groups), vocab], averaged over the noise samples, of the
        corrupted run with, per group g, layer l's clean state restored at the tokens `g[l]`."""
        samples = self.noise.shape[0]
        rows = samples * len(groups)

        def edit(name: str, output: torch.Tensor) -> torch.Tensor:
            output = output.clone()
            if name == self.adapter.embed_name:
                output[:, self.subject] += self.noise.repeat(len(groups), 1, 1).to(output.dtype)
                return output
            layer = self.layers.index(name)
            for g, restore in enumerate(groups):
                tokens = list(restore.get(layer, ()))
                if tokens:
                    clean = clean_states[layer][tokens].to(output.dtype)
                    output[g * samples : (g + 1) * samples, tokens] = clean
            return output

        restored = sorted({layer for restore in groups for layer in restore})
        names = [self.adapter.embed_name, *(self.layers[layer] for layer in restored)]
        inputs = {k: v.expand(rows, -1) for k, v in self.batch.model_inputs().items()}
        with capture_modules(self.handle, names, edit_output=edit):
            logits = self.handle.model(**inputs, use_cache=False).logits
        return logits[:, -1].float().softmax(-1).view(len(groups), samples, -1).mean(1)


def causal_trace(
    handle,
    prompt: str,
    subject: str,
    *,
    every_token: bool = False,
    samples: int = SAMPLES,
    seed: int = 0,
    noise: float | None = None,
) -> Trace:
    """Trace one fact: each layer restored at the subject's last token (one pass of layers x
    `samples` rows) and, with `every_token`, at every token (one more pass per layer); the other
    arguments as `Tracer`'s."""
    tracer = Tracer(handle, prompt, subject, samples=samples, seed=seed, noise=noise)
    clean_probs, states = tracer.clean()
    answer_id = int(clean_probs.argmax())
    corrupted = float(tracer.patched([{}], states)[0, answer_id])
    layers = range(handle.adapter.num_layers)
    last = tracer.subject[-1]
    by_layer = tracer.patched([{layer: [last]} for layer in layers], states)[:, answer_id] - corrupted
    grid = None
    if every_token:
        tokens = range(len(states[0]))
        rows = [tracer.patched([{layer: [t]} for t in tokens], states)[:, answer_id] for layer in layers]
        grid = (torch.stack(rows) - corrupted).cpu()
    ids = tracer.batch.input_ids[0].tolist()
    return Trace(
        prompt=trim_prompt(prompt),
        tokens=[handle.tokenizer.decode([i]) for i in ids],
        subject=tracer.positions,
        answer_id=answer_id,
        answer=handle.tokenizer.decode([answer_id]),
        clean=float(clean_probs[answer_id]),
        corrupted=corrupted,
        by_layer=by_layer.cpu(),
        grid=grid,
    )
