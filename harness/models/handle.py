"""A loaded model with what every method and metric needs next to it, and exact undo of edits.

Undo works by snapshot: before editing, a method clones only the parameters it will touch, and
restoring copies those bytes back. That costs what was touched, never a deepcopy of the model, and
is bit-exact because nothing is recomputed. Verify mode (for tests and for suspicious runs) also
hashes every parameter, so a method that writes outside its snapshot is caught at the first undo
instead of silently contaminating every later case.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from harness.ground import AppliedEdit, HarnessError
from harness.models.adapters import ArchitectureAdapter

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

VERIFY_ENV = "HARNESS_VERIFY_RESTORE"


class RestoreError(HarnessError):
    """Parameters differ after a restore: an edit wrote outside the snapshot it declared."""


def tensor_digest(tensor: torch.Tensor) -> bytes:
    """A hash of a tensor's exact bytes, dtype and shape (bf16 included, which NumPy lacks)."""
    data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
    h = hashlib.sha256(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    h.update(memoryview(data))
    return h.digest()


@dataclass
class Snapshot:
    """Copies of some parameters, and in verify mode the digest of every parameter at that time."""

    tensors: dict[str, torch.Tensor]
    digests: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.tensors)


class ModelHandle:
    """A model, its tokenizer and architecture adapter, under the name it was loaded by."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        name: str,
        *,
        source: str = "",
        verify: bool = False,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.source = source or name
        self.adapter = ArchitectureAdapter(model)
        self.verify = verify or os.environ.get(VERIFY_ENV, "") not in ("", "0")
        first = next(model.parameters())
        self.device: torch.device = first.device
        self.dtype: torch.dtype = first.dtype
        self._fingerprint: str | None = None

    def __repr__(self) -> str:
        return f"ModelHandle({self.name!r}, {self.adapter.family}, {self.device}, {self.dtype})"

    def _parameters(self) -> dict[str, torch.nn.Parameter]:
        # Tied weights are listed under every name (lm_head.weight and model.embed_tokens.weight).
        return dict(self.model.named_parameters(remove_duplicate=False))

    def _all_digests(self) -> dict[str, bytes]:
        return {name: tensor_digest(p) for name, p in self.model.named_parameters()}

    def fingerprint(self) -> str:
        """A content hash of every parameter: keys caches (statistics, pre-edit outputs) so that they
        are reused for the same weights under any name and never for different ones.

        Computed on first use and kept, so ask for it before editing (the runner does, at load)."""
        if self._fingerprint is None:
            h = hashlib.sha256(self.adapter.model_type.encode())
            for name, digest in sorted(self._all_digests().items()):
                h.update(name.encode())
                h.update(digest)
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def snapshot(self, names: Iterable[str]) -> Snapshot:
        """Clone the named parameters (and only those) so that `restore` can put them back."""
        params = self._parameters()
        wanted = list(dict.fromkeys(names))
        missing = [n for n in wanted if n not in params]
        if missing:
            raise HarnessError(
                f"{self.name}: no parameter named {', '.join(map(repr, missing))} "
                f"(parameter names look like {next(iter(params))!r})"
            )
        with torch.no_grad():
            tensors = {n: params[n].detach().clone() for n in wanted}
        return Snapshot(tensors=tensors, digests=self._all_digests() if self.verify else {})

    def restore(self, snapshot: Snapshot) -> None:
        """Copy the snapshot's parameters back; in verify mode, check that now every parameter of the
        model is bit-identical to when the snapshot was taken."""
        params = self._parameters()
        with torch.no_grad():
            for name, saved in snapshot.tensors.items():
                params[name].copy_(saved)
                params[name].grad = None
        if self.verify:
            self.check_unchanged(snapshot)

    def check_unchanged(self, snapshot: Snapshot) -> None:
        if not snapshot.digests:
            raise HarnessError("this snapshot was taken without verify mode: it holds no digests to check")
        now = self._all_digests()
        changed = sorted(name for name, digest in snapshot.digests.items() if now.get(name) != digest)
        if changed:
            shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
            raise RestoreError(
                f"{self.name}: after restoring the snapshot of {len(snapshot.tensors)} parameter(s), "
                f"{len(changed)} parameter(s) still differ from before the edit: {shown}. "
                "The edit changed weights outside the snapshot it took."
            )


class SnapshotEdit(AppliedEdit):
    """The applied edit of a weight-editing method: undo restores the snapshot taken before it."""

    def __init__(self, handle: ModelHandle, snapshot: Snapshot, *, context: str = "") -> None:
        self.handle = handle
        self.snapshot = snapshot
        self.context = context

    def undo(self) -> None:
        self.handle.restore(self.snapshot)
