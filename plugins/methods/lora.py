"""LoRA and AdaLoRA: low-rank adapters, trained on the edit, through peft.

The adapters are injected into the model's own modules (peft's tuner classes, not a `PeftModel`
wrapper), so `handle.model` is the edited model for the evaluator with no indirection. Training uses
the target-only masked loss. The base weights are frozen while the adapters train and are never
written; undo unloads the adapters (putting the original modules back), deletes the `peft_config`
attribute peft leaves on the model and restores every parameter's `requires_grad`. In verify mode it
then checks every parameter against its digest from before the edit.

Sequential editing keeps one adapter per model: the first edit injects it, every later edit goes
on training the same adapter on its own case (as the reference toolkit's sequential LoRA does), and
undoing a later edit puts the adapter's tensors back as they were before it. Edits are undone in
reverse order. A batch edit trains on all its cases at once.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from harness.api import AppliedEdit, Capabilities, EditCase, HarnessError, Method
from harness_plugins.methods.lora_labels import edit_batch, target_nll

if TYPE_CHECKING:
    from peft.tuners.lora import LoraModel

    from harness.api import ModelHandle, Snapshot

ADAPTER = "knowedit"
#: Relative depths of the default adapted layers: the middle of the network, where MLPs store facts.
DEFAULT_DEPTHS = (0.35, 0.45, 0.55, 0.65)
#: AdaLoRA's schedule as fractions of the steps: warm-up before and fine-tuning after rank pruning.
ADALORA_TINIT, ADALORA_TFINAL = 0.1, 0.2

#: Module roles resolved through the architecture adapter; anything else is a path below the layer.
_ROLES = {"mlp_out": "mlp_out_name", "mlp_in": "mlp_in_name", "attn": "attn_name"}

_COMMON_SCHEMA: dict[str, Any] = {
    "layers": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1, "x-layer": True},
    "target_modules": {
        "type": "array",
        "items": {"type": "string"},
        "minItems": 1,
        "default": ["mlp_out"],
        "description": "per layer: 'mlp_out', 'mlp_in', or a module path below the layer "
        "(e.g. 'self_attn.q_proj')",
    },
    "lora_alpha": {"type": "number", "exclusiveMinimum": 0, "default": 32},
    "lora_dropout": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.0},
    "lr": {"type": "number", "exclusiveMinimum": 0, "default": 5e-3},
    "num_steps": {"type": "integer", "minimum": 1, "default": 40},
    "stop_loss": {
        "type": "number",
        "minimum": 0,
        "default": 0.05,
        "description": "stop once the target NLL is below this",
    },
}


class _Session:
    """The adapter living in one model, and the state needed to take it out again."""

    def __init__(
        self,
        handle: ModelHandle,
        tuner: LoraModel,
        kind: str,
        requires_grad: dict[str, bool],
        snapshot: Snapshot | None,
    ) -> None:
        self.handle = handle
        self.tuner = tuner
        self.kind = kind
        self.requires_grad = requires_grad
        self.snapshot = snapshot
        self.edits = 0


_SESSIONS: weakref.WeakKeyDictionary[nn.Module, _Session] = weakref.WeakKeyDictionary()


def module_names(handle: ModelHandle, layers: Sequence[int], targets: Sequence[str]) -> list[str]:
    """Full module names of every target role or path at every layer."""
    adapter = handle.adapter
    names = []
    for layer in layers:
        for target in targets:
            role = _ROLES.get(target)
            name = getattr(adapter, role)(layer) if role else f"{adapter.layer_name(layer)}.{target}"
            adapter.module(name)
            names.append(name)
    return names


def _adapter_state(tuner: LoraModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in tuner.model.state_dict().items() if f".{ADAPTER}" in k}


class LoRAEdit(AppliedEdit):
    def __init__(self, model: nn.Module, session: _Session, adapter_before: dict[str, torch.Tensor] | None):
        self.model = model
        self.session = session
        self.adapter_before = adapter_before
        self.position = session.edits

    def undo(self) -> None:
        session = self.session
        if _SESSIONS.get(self.model) is not session or session.edits != self.position:
            raise HarnessError("LoRA edits must be undone in reverse order, each once")
        session.edits -= 1
        if self.adapter_before is not None:
            session.tuner.model.load_state_dict(self.adapter_before, strict=False)
            return
        session.tuner.unload()
        if hasattr(self.model, "peft_config"):
            del self.model.peft_config
        for name, param in self.model.named_parameters():
            param.requires_grad_(session.requires_grad[name])
            param.grad = None
        del _SESSIONS[self.model]
        if session.snapshot is not None:
            session.handle.check_unchanged(session.snapshot)


class LoRA(Method):
    name: ClassVar[str] = "lora"
    capabilities: ClassVar[Capabilities] = Capabilities(
        batch=True, sequential=True, needs_training=False, edits_weights=False
    )
    tuning_hint: ClassVar[str] = "layers (the adapted layers), lr, num_steps"
    hparams_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {**_COMMON_SCHEMA, "rank": {"type": "integer", "minimum": 1, "default": 8}},
        "required": ["layers"],
    }

    def default_hparams(self, handle: ModelHandle) -> dict[str, Any]:
        return {"layers": sorted({handle.adapter.layer_at(d) for d in DEFAULT_DEPTHS})}

    def peft_config(self, names: list[str], hparams: Mapping[str, Any], transposed: bool):
        from peft import LoraConfig

        return LoraConfig(
            r=hparams["rank"],
            lora_alpha=hparams["lora_alpha"],
            lora_dropout=hparams["lora_dropout"],
            target_modules=names,
            fan_in_fan_out=transposed,
        )

    def tuner(self, model: nn.Module, config: Any) -> LoraModel:
        from peft.tuners.lora import LoraModel

        return LoraModel(model, config, ADAPTER)

    def after_step(self, tuner: LoraModel, step: int) -> None:
        """AdaLoRA reallocates ranks here; plain LoRA has nothing to do."""

    def apply(
        self, handle: ModelHandle, cases: Sequence[EditCase], hparams: Mapping[str, Any]
    ) -> AppliedEdit:
        if not cases:
            raise HarnessError(f"{self.name}: apply needs at least one edit case")
        model = handle.model
        session = _SESSIONS.get(model)
        if session is None:
            session = self._inject(handle, hparams)
            adapter_before = None
        elif session.kind != self.name:
            raise HarnessError(
                f"{self.name}: the model already carries a {session.kind} adapter from an earlier edit; "
                "undo it before editing with another adapter method"
            )
        else:
            adapter_before = _adapter_state(session.tuner)
        session.edits += 1
        self._train(handle, session.tuner, cases, hparams)
        return LoRAEdit(model, session, adapter_before)

    def _inject(self, handle: ModelHandle, hparams: Mapping[str, Any]) -> _Session:
        model = handle.model
        requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
        snapshot = handle.snapshot([]) if handle.verify else None
        names = module_names(handle, hparams["layers"], hparams["target_modules"])
        tuner = self.tuner(model, self.peft_config(names, hparams, handle.adapter.out_weight_transposed))
        tuner.to(handle.device)
        session = _Session(handle, tuner, self.name, requires_grad, snapshot)
        _SESSIONS[model] = session
        return session

    def _train(
        self, handle: ModelHandle, tuner: LoraModel, cases: Sequence[EditCase], hparams: Mapping[str, Any]
    ):
        batch = edit_batch(handle, cases)
        inputs, labels = batch.model_inputs(), batch.window_labels
        params = [p for p in tuner.model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=hparams["lr"])
        was_training = tuner.model.training
        tuner.model.train()
        try:
            with torch.enable_grad():
                for step in range(hparams["num_steps"]):
                    out = tuner(**inputs)
                    if target_nll(out.logits, labels).item() < hparams["stop_loss"]:
                        break
                    out.loss.backward()
                    optimizer.step()
                    self.after_step(tuner, step)
                    optimizer.zero_grad(set_to_none=True)
        finally:
            tuner.model.train(was_training)
            optimizer.zero_grad(set_to_none=True)


class AdaLoRA(LoRA):
    """LoRA whose rank is pruned during training by singular-value importance (Zhang et al. 2023).

    peft needs the total number of steps up front (the reference toolkit's config omits it and peft
    refuses to run); here it is `num_steps`, with warm-up and final phases as fixed fractions of it.
    """

    name: ClassVar[str] = "adalora"
    hparams_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            **_COMMON_SCHEMA,
            "init_r": {"type": "integer", "minimum": 1, "default": 12},
            "target_r": {"type": "integer", "minimum": 1, "default": 8},
            "orth_reg_weight": {"type": "number", "minimum": 0, "default": 0.5},
        },
        "required": ["layers"],
    }

    def peft_config(self, names: list[str], hparams: Mapping[str, Any], transposed: bool):
        from peft import AdaLoraConfig

        steps = hparams["num_steps"]
        tinit, tfinal = int(ADALORA_TINIT * steps), int(ADALORA_TFINAL * steps)
        return AdaLoraConfig(
            init_r=hparams["init_r"],
            target_r=hparams["target_r"],
            lora_alpha=hparams["lora_alpha"],
            lora_dropout=hparams["lora_dropout"],
            orth_reg_weight=hparams["orth_reg_weight"],
            target_modules=names,
            fan_in_fan_out=transposed,
            total_step=steps,
            tinit=tinit,
            tfinal=tfinal,
            deltaT=1,
        )

    def tuner(self, model: nn.Module, config: Any) -> LoraModel:
        from peft.tuners.adalora import AdaLoraModel

        return AdaLoraModel(model, config, ADAPTER)

    def after_step(self, tuner: LoraModel, step: int) -> None:
        tuner.update_and_allocate(step)
