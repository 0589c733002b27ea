"""SERAC: edits kept in an explicit memory, used only for the inputs they concern.

Mitchell et al., "Memory-Based Model Editing at Scale" (ICML 2022). An edit is stored as it is,
never written into the weights. For each input x a scope classifier g(e, x) in [0, 1] scores every
stored edit e; with the best e* and g(e*, x) > 0.5 the input is answered by a counterfactual model
h(e*, x), conditioned on the edit, and otherwise by the untouched base model (paper, eq. 1):

    f(x) = h(e*, x)        if g(e*, x) > 0.5,   e* = argmax_e g(e, x)
    f(x) = base(x)         otherwise

Both g and h are trained on a train split (paper, section 3): g with a binary cross-entropy over
(edit, input) pairs, an edit's own prompt and rephrases being in scope and its locality probes and
the other edits' inputs out of scope; h with the negative log-likelihood of the edit's target after
its prompt or a rephrase, conditioned on the edit.

Here (differences from the paper, and EasyEdit, in docs/methods.md):
- g is the paper's embedding classifier: cos(P·emb(e), P·emb(x)) · s + b over all-MiniLM-L6-v2
  sentence embeddings (the encoder IKE uses), where only the projection P [384, 384] (identity at
  the start), the scale s and the bias b are learnt; the encoder stays frozen (the paper fine-tunes
  a DistilBERT).
- h is the base model itself with the edit "New Fact: {prompt} {target}" on the line before the
  input, plus low-rank adapters (rank r, zero at the start, as LoRA) on the MLP output matrices of
  the last layers that are active only in h's passes (the paper trains a separate small model).
  The untrained h is in-context editing of the one edit g chose.
- Routing happens per sequence in the model's forward: a batch row that g puts in an edit's scope is
  run with that edit's line before it (its positions shifted, left padding added to the others), so
  scoring and KV-cached generation both see f(x). Rows out of every scope are computed by the base
  model, bit-identical up to the extra left padding.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from harness.api import (
    AppliedEdit,
    Capabilities,
    EditCase,
    encode_answers,
    join_prompt_answer,
)
from harness_plugins.methods.editor_training import (
    TRAINING_PROPERTIES,
    TrainedEditorMethod,
    draw,
    in_scope_prompts,
    need_fit,
    out_of_scope_probes,
    pick,
    training_loop,
    usable,
)
from harness_plugins.methods.ike_retrieval import SentenceEncoder
from harness_plugins.methods.lora_labels import answer_labels, target_nll
from harness_plugins.rome_family.weights import LAYERS_PROPERTY, trainable_only

if TYPE_CHECKING:
    from harness.api import ModelHandle, TrainingProgress


def edit_line(case: EditCase) -> str:
    """What h reads before the input: the edit as a sentence on a line of its own."""
    return f"New Fact: {join_prompt_answer(case.prompt, case.target_new)}\n"


class ScopeClassifier(nn.Module):
    """g(e, x) = sigmoid(s · cos(P e, P x) + b) on frozen sentence embeddings e, x [n, dim]."""

    def __init__(self, dim: int, threshold: float) -> None:
        super().__init__()
        self.proj = nn.Parameter(torch.eye(dim))
        self.log_scale = nn.Parameter(torch.tensor(2.3))  # s = 10 at the start
        # b = -s · threshold: at the start, in scope means a cosine similarity above `threshold`
        self.bias = nn.Parameter(torch.tensor(-10.0 * threshold))

    def forward(self, edits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Logits [n_inputs, n_edits]."""
        e = nn.functional.normalize(edits @ self.proj.T, dim=-1)
        x = nn.functional.normalize(inputs @ self.proj.T, dim=-1)
        return self.log_scale.exp() * (x @ e.T) + self.bias


class LowRank(nn.Module):
    """ΔW = B A [d_out, d_in] with A [r, d_in] small random and B [d_out, r] zero (LoRA's start)."""

    def __init__(self, d_in: int, d_out: int, rank: int) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.randn(rank, d_in) / d_in**0.5)
        self.b = nn.Parameter(torch.zeros(d_out, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.a.T) @ self.b.T


class Adapters:
    """h's adapters as forward hooks on the MLP output modules, scaled per row by `gate` [B] (1 in
    an h pass, 0 for rows the base model answers); the hooks are on between `attach` and `detach`
    and add nothing while `gate` is None."""

    def __init__(self, handle: ModelHandle, layers: Sequence[int], modules: nn.ModuleDict) -> None:
        self.handle = handle
        self.layers = list(layers)
        self.modules = modules
        self.gate: torch.Tensor | None = None
        self.hooks: list[Any] = []

    def attach(self) -> None:
        for layer in self.layers:
            module = self.handle.adapter.module(self.handle.adapter.mlp_out_name(layer))
            self.hooks.append(module.register_forward_hook(self._hook(str(layer))))

    def detach(self) -> None:
        while self.hooks:
            self.hooks.pop().remove()

    def _hook(self, key: str) -> Callable[..., torch.Tensor | None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
            if self.gate is None or not bool(self.gate.any()):
                return None
            delta = self.modules[key](args[0].to(self.modules[key].a.dtype))
            return output + (delta * self.gate[:, None, None]).to(output.dtype)

        return hook


def prepend(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    prefixes: Sequence[Sequence[int]],
    pad_id: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row b with the tokens `prefixes[b]` before it, left-padded to one width: ids, mask and
    positions [B, P + T] with P the longest prefix. The original T columns stay the last ones (so a
    caller's `logits_to_keep` still points at them) and their positions move up by the row's
    prefix length; a row with an empty prefix is the original row after P masked pads."""
    rows = input_ids.shape[0]
    longest = max(len(p) for p in prefixes)
    ids = torch.full((rows, longest), pad_id, dtype=input_ids.dtype, device=input_ids.device)
    mask = torch.zeros((rows, longest), dtype=attention_mask.dtype, device=input_ids.device)
    positions = torch.ones((rows, longest), dtype=position_ids.dtype, device=input_ids.device)
    shift = torch.zeros(rows, dtype=position_ids.dtype, device=input_ids.device)
    for b, prefix in enumerate(prefixes):
        n = len(prefix)
        if n:
            ids[b, longest - n :] = torch.tensor(prefix, dtype=input_ids.dtype)
            mask[b, longest - n :] = 1
            positions[b, longest - n :] = torch.arange(n)
            shift[b] = n
    return (
        torch.cat([ids, input_ids], 1),
        torch.cat([mask, attention_mask], 1),
        torch.cat([positions, position_ids + shift[:, None]], 1),
    )


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


class Router:
    """The edit memory of one model and the forward that routes each row (installed over the
    model's `forward` while the memory holds an edit)."""

    def __init__(self, handle: ModelHandle, editor: Editor) -> None:
        self.handle = handle
        self.editor = editor
        self.memory: list[tuple[EditCase, torch.Tensor]] = []
        self.adapters = Adapters(handle, editor.layers, editor.adapters)
        self.original = handle.model.forward
        #: For KV-cached decoding after a routed first pass: the prefix mask, the position shift and
        #: the adapters' gate of each row.
        self.pending: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def install(self) -> None:
        self.adapters.attach()
        self.handle.model.forward = self.forward

    def uninstall(self) -> None:
        self.adapters.detach()
        del self.handle.model.forward

    @torch.no_grad()
    def scope(self, texts: Sequence[str]) -> list[int]:
        """Per text, the index of the stored edit whose scope it falls in (the best-scoring one),
        or -1."""
        edits = torch.stack([emb for _, emb in self.memory])
        logits = self.editor.classifier(edits, self.editor.embed(texts))
        best = logits.max(-1)
        return [int(i) if float(v) > 0 else -1 for v, i in zip(best.values, best.indices, strict=True)]

    def forward(self, input_ids: torch.Tensor | None = None, **kwargs: Any) -> Any:
        """The model's forward, routed: a first pass classifies each row and runs the in-scope ones
        with their edit's line before them (h's adapters on for those rows); the KV-cached
        decoding steps after it continue each row as its first pass began."""
        if input_ids is None:
            return self.original(input_ids=input_ids, **kwargs)
        past = kwargs.get("cache", kwargs.get("past_key_values"))
        mask = kwargs.pop("attention_mask", None)
        mask = torch.ones_like(input_ids) if mask is None else mask
        positions = kwargs.pop("position_ids", None)
        positions = _positions(mask) if positions is None else positions
        if past is not None and _cached(past):
            if self.pending is None:
                return self.original(
                    input_ids=input_ids, attention_mask=mask, position_ids=positions, **kwargs
                )
            prefix_mask, shift, gate = self.pending
            mask, positions = torch.cat([prefix_mask, mask], 1), positions + shift[:, None]
            return self._gated(
                gate, input_ids=input_ids, attention_mask=mask, position_ids=positions, **kwargs
            )
        tokenizer = self.handle.tokenizer
        rows = zip(input_ids, mask, strict=True)
        chosen = self.scope([tokenizer.decode(row[m.bool()], skip_special_tokens=True) for row, m in rows])
        self.pending = None
        if all(i < 0 for i in chosen):
            return self.original(input_ids=input_ids, attention_mask=mask, position_ids=positions, **kwargs)
        prefixes = [self.editor.line_ids(self.memory[i][0]) if i >= 0 else [] for i in chosen]
        ids, full_mask, full_positions = prepend(input_ids, mask, positions, prefixes, tokenizer.pad_token_id)
        width = ids.shape[1] - input_ids.shape[1]
        keep = kwargs.get("logits_to_keep")
        if isinstance(keep, torch.Tensor):
            kwargs["logits_to_keep"] = keep + width
        gate = torch.tensor([float(i >= 0) for i in chosen], device=ids.device)
        out = self._gated(
            gate, input_ids=ids, attention_mask=full_mask, position_ids=full_positions, **kwargs
        )
        if out.logits.shape[1] > input_ids.shape[1]:
            out.logits = out.logits[:, -input_ids.shape[1] :]
        if kwargs.get("use_cache"):
            self.pending = (full_mask[:, :width], full_positions[:, width] - positions[:, 0], gate)
        return out

    def _gated(self, gate: torch.Tensor, **inputs: Any) -> Any:
        """The model's own forward with h's adapters on for the rows `gate` marks."""
        self.adapters.gate = gate
        try:
            return self.original(**inputs)
        finally:
            self.adapters.gate = None


def _cached(past: Any) -> bool:
    """Whether a KV cache already holds tokens (a decoding step, not a first pass)."""
    length = getattr(past, "get_seq_length", None)
    return bool(length() if callable(length) else past)


_ROUTERS: weakref.WeakKeyDictionary[nn.Module, Router] = weakref.WeakKeyDictionary()


class Editor:
    """What SERAC trains: the scope classifier and h's adapters, with the frozen sentence encoder."""

    def __init__(self, handle: ModelHandle, hparams: Mapping[str, Any]) -> None:
        self.handle = handle
        self.encoder = SentenceEncoder(hparams["sentence_model"], handle.device)
        dim = int(self.encoder.model.config.hidden_size)
        self.classifier = ScopeClassifier(dim, hparams["threshold"]).to(handle.device)
        adapter = handle.adapter
        self.layers = list(hparams["layers"])
        self.adapters = nn.ModuleDict(
            {
                str(layer): LowRank(adapter.intermediate_size, adapter.hidden_size, hparams["rank"])
                for layer in self.layers
            }
        ).to(handle.device)
        self._embedded: dict[str, torch.Tensor] = {}
        self._lines: dict[str, list[int]] = {}

    def modules(self) -> dict[str, nn.Module]:
        return {"classifier": self.classifier, "adapters": self.adapters}

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Sentence embeddings [n, dim] of texts, each computed once."""
        new = [t for t in dict.fromkeys(texts) if t not in self._embedded]
        if new:
            self._embedded.update(zip(new, self.encoder.encode(new).to(self.handle.device), strict=True))
        return torch.stack([self._embedded[t] for t in texts])

    def line_ids(self, case: EditCase) -> list[int]:
        """The token ids of the edit's line, as h reads them before every input."""
        line = edit_line(case)
        if line not in self._lines:
            self._lines[line] = self.handle.tokenizer(line, add_special_tokens=False)["input_ids"]
        return self._lines[line]

    # -- training ---------------------------------------------------------------------------

    def counterfactual_loss(self, cases: Sequence[EditCase], generator: torch.Generator) -> torch.Tensor:
        """h's NLL of each case's target after one of its in-scope prompts, with its line before."""
        prompts = [pick(in_scope_prompts(c), generator) for c in cases]
        batch = encode_answers(
            self.handle.tokenizer, prompts, [c.target_new for c in cases], padding_side="right"
        ).to(self.handle.device)
        inputs = batch.model_inputs()
        ids, mask, positions = prepend(
            inputs["input_ids"],
            inputs["attention_mask"],
            inputs["position_ids"],
            [self.line_ids(c) for c in cases],
            self.handle.tokenizer.pad_token_id,
        )
        width = batch.input_ids.shape[1]
        gate = torch.ones(len(cases), device=ids.device)
        adapters = Adapters(self.handle, self.layers, self.adapters)
        adapters.attach()
        adapters.gate = gate
        try:
            logits = self.handle.model(
                input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=width
            ).logits
        finally:
            adapters.detach()
        return target_nll(logits, answer_labels(batch))

    def scope_loss(self, cases: Sequence[EditCase], generator: torch.Generator) -> torch.Tensor:
        """g's binary cross-entropy over every (edit, input) pair of the batch: an edit's prompt and
        rephrases (alone, or with its target or another case's target after them, as the evaluator
        scores them) in its scope; its locality probes and the other edits' inputs out of it."""
        edits = [join_prompt_answer(c.prompt, c.target_new) for c in cases]
        texts: list[str] = []
        owner: list[int] = []
        for i, case in enumerate(cases):
            for prompt in in_scope_prompts(case):
                answer = pick([case.target_new, cases[(i + 1) % len(cases)].target_new], generator)
                texts += [prompt, join_prompt_answer(prompt, answer)]
                owner += [i, i]
            for prompt, answer in out_of_scope_probes(case):
                texts += [prompt, join_prompt_answer(prompt, answer)]
                owner += [-1, -1]
        labels = torch.tensor(owner, device=self.handle.device)[:, None] == torch.arange(
            len(cases), device=self.handle.device
        )
        logits = self.classifier(self.embed(edits), self.embed(texts))
        positives = labels.float().sum().clamp(min=1)
        weight = (labels.numel() - positives) / positives  # balance the few in-scope pairs
        return nn.functional.binary_cross_entropy_with_logits(logits, labels.float(), pos_weight=weight)


class SeracEdit(AppliedEdit):
    """Undo removes this apply's edits from the memory; with none left, the router goes."""

    def __init__(self, router: Router, size_before: int) -> None:
        self.router = router
        self.size_before = size_before

    def undo(self) -> None:
        del self.router.memory[self.size_before :]
        if not self.router.memory:
            self.router.uninstall()
            _ROUTERS.pop(self.router.handle.model, None)


class SERAC(TrainedEditorMethod):
    name: ClassVar[str] = "serac"
    capabilities: ClassVar[Capabilities] = Capabilities(
        batch=True, sequential=True, needs_training=True, edits_weights=False
    )
    tuning_hint: ClassVar[str] = "steps (the training budget), threshold, lr"
    hparams_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            **TRAINING_PROPERTIES,
            "layers": {**LAYERS_PROPERTY, "description": "layers whose MLP output carries h's adapters"},
            "rank": {"type": "integer", "minimum": 1, "default": 8, "description": "rank of h's adapters"},
            "lr": {
                "type": "number",
                "exclusiveMinimum": 0,
                "default": 1e-3,
                "description": "Adam step size",
            },
            "threshold": {
                "type": "number",
                "minimum": -1,
                "maximum": 1,
                "default": 0.6,
                "description": "the untrained classifier's cosine similarity for 'in scope' (g's start)",
            },
            "sentence_model": {
                "type": "string",
                "default": "all-MiniLM-L6-v2",
                "description": "g's encoder: the bundled all-MiniLM-L6-v2, a folder or a hub id",
            },
        },
        "required": ["layers"],
    }

    def fit(
        self,
        handle: ModelHandle,
        train_cases: Sequence[EditCase],
        hparams: Mapping[str, Any],
        *,
        progress: TrainingProgress | None = None,
    ) -> None:
        """Train g and h on the train split (or load them, when trained before on the same)."""
        cases = usable(train_cases, self.name)
        torch.manual_seed(hparams["seed"])
        editor = Editor(handle, hparams)
        loop = training_loop(self.name, handle, cases, hparams, progress)
        params = [*editor.classifier.parameters(), *editor.adapters.parameters()]
        optimizer = torch.optim.Adam(params, lr=hparams["lr"])

        def loss_at(step: int) -> torch.Tensor:
            generator = loop.generator(step)
            batch = draw(cases, hparams["train_batch"], generator)
            return editor.counterfactual_loss(batch, generator) + editor.scope_loss(batch, generator)

        with trainable_only(handle.model, ()):
            loop.run(editor.modules(), optimizer, loss_at)
        for p in params:
            p.requires_grad_(False)
        self.editor = editor

    def apply(
        self, handle: ModelHandle, cases: Sequence[EditCase], hparams: Mapping[str, Any]
    ) -> AppliedEdit:
        need_fit(self.editor, handle, self.name)
        router = _ROUTERS.get(handle.model)
        if router is None:
            router = _ROUTERS[handle.model] = Router(handle, self.editor)
            router.install()
        size_before = len(router.memory)
        edits = self.editor.embed([join_prompt_answer(c.prompt, c.target_new) for c in cases])
        router.memory.extend(zip(cases, edits, strict=True))
        return SeracEdit(router, size_before)
