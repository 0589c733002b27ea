"""Training a method's editor once: content-keyed checkpoints, resuming, and the loss on show.

Trained editors (MEND's gradient editors, SERAC's scope classifier and counterfactual adapters)
learn from a task's train split before they edit. Training costs minutes to hours, so it must
never happen twice for the same inputs, and a killed training must not start again from zero.
`TrainingLoop` gives a method both:

- the finished editor is an artifact (`$HARNESS_HOME/trained/<method>-<key>.pt`) whose key is a
  `content_key` of everything the result depends on: the model's fingerprint, the method's name,
  its resolved hyperparameters, the train cases (their full JSON) and the training seed. `harness
  train` and `harness run` find the same entry; a run with a changed hyperparameter or split trains
  anew, under another key;
- while training, every `save_every` steps the modules, the optimiser's state, the step reached
  and torch's random state go to a partial entry (`$HARNESS_HOME/training/...`), written
  atomically (a private file renamed into place), so a SIGKILL at any moment leaves either the
  previous checkpoint or the new one, never half of one. A new call with the same key resumes
  from it; because the randomness of step `i` comes from `loop.generator(i)` and the optimiser
  state is restored exactly, the resumed training reaches the very checkpoint an uninterrupted
  one reaches (bit for bit on the same machine and thread count).

The loop itself is plain PyTorch (`optimizer.zero_grad`, `loss.backward`, `optimizer.step`); the
method supplies the modules, the optimiser and `loss_at(step)`.
"""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from harness.cache import TORCH_CODEC, ArtifactCache, content_key
from harness.seeding import seed_everything

if TYPE_CHECKING:
    import torch

    from harness.ground import EditCase, Method
    from harness.models.handle import ModelHandle

#: Bumped when the layout of a stored checkpoint changes, so an old one is never read as new.
FORMAT = "trained-v1"
#: The artifact kinds: finished editors, and checkpoints of trainings in progress.
FINISHED_KIND = "trained"
PARTIAL_KIND = "training"


class TrainingProgress:
    """What a training loop tells whoever shows it. This base shows nothing; `TrainingDisplay`
    is the harness's bar (the loss and the time left). A method's `fit` passes it on to
    `TrainingLoop`."""

    def found(self, label: str, path: Path) -> None:
        """A finished checkpoint of `label` exists at `path`: nothing will be trained."""

    def start(self, label: str, total: int, done: int) -> None:
        """Training starts at step `done` of `total` (`done` > 0 when it resumes)."""

    def step(self, done: int, loss: float) -> None:
        """Step `done` (counted from 1) finished with this loss."""

    def finish(self, path: Path) -> None:
        """Training ended; the editor is stored at `path`."""


class TrainingDisplay(TrainingProgress):
    """The training progress on a stream: a tqdm bar with the loss and tqdm's time left ("bars"),
    or a line every tenth of the steps ("lines", for logs), or nothing ("off")."""

    def __init__(self, stream: IO[str] | None = None, style: str = "bars", source: str = "") -> None:
        """`source`: the task whose train split the editor learns from, named in every message
        (a cross-domain run trains one editor per train task)."""
        self.stream = stream if stream is not None else sys.stderr
        self.style = style
        self.source = source
        self._bar: Any = None
        self._total = 0
        self._started = 0.0
        self._first = 0

    def _say(self, text: str) -> None:
        if self.style != "off":
            print(text, file=self.stream, flush=True)

    def _named(self, label: str) -> str:
        return f"{label} on the {self.source} train split" if self.source else label

    def found(self, label: str, path: Path) -> None:
        self._say(f"{self._named(label)}: using the trained checkpoint {path}")

    def start(self, label: str, total: int, done: int) -> None:
        self._total, self._first, self._started = total, done, time.monotonic()
        resumed = f", resuming at step {done}" if done else ""
        self._say(f"{self._named(label)}: no trained checkpoint, training it first: {total} steps{resumed}")
        if self.style == "bars":
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, initial=done, desc=f"train {label}", unit="step", file=self.stream,
                dynamic_ncols=True, leave=False,
            )  # fmt: skip

    def step(self, done: int, loss: float) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(f"loss {loss:.4f}", refresh=False)
            self._bar.update(1)
            return
        every = max(1, self._total // 10)
        if self.style == "lines" and (done % every == 0 or done == self._total):
            rate = (time.monotonic() - self._started) / max(1, done - self._first)
            left = rate * (self._total - done)
            self._say(f"  step {done}/{self._total}: loss {loss:.4f}, about {left:.0f}s left")

    def finish(self, path: Path) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        took = time.monotonic() - self._started
        self._say(f"trained in {took:.0f}s; stored at {path}")


def train_key(
    method: str, handle: ModelHandle, hparams: Mapping[str, Any], cases: Sequence[EditCase], seed: int
) -> str:
    """The content key of a trained editor: model weights, method, hyperparameters, the train
    cases' full content and the seed."""
    return content_key(
        FORMAT, method, handle.fingerprint(), dict(hparams), [c.to_json() for c in cases], seed
    )


class TrainingLoop:
    """One editor's training, checkpointed under a content key (see the module's docstring).

    `steps`: optimiser steps in all; `save_every`: steps between partial checkpoints; `label`
    names the training in what `progress` shows. Raises ValueError for steps < 0 or save_every < 1.
    """

    def __init__(
        self,
        method: str,
        handle: ModelHandle,
        hparams: Mapping[str, Any],
        cases: Sequence[EditCase],
        *,
        seed: int,
        steps: int,
        save_every: int = 25,
        progress: TrainingProgress | None = None,
        label: str = "",
    ) -> None:
        if steps < 0 or save_every < 1:
            raise ValueError(f"steps must be >= 0 and save_every >= 1, got {steps} and {save_every}")
        self.method = method
        self.seed = seed
        self.steps = steps
        self.save_every = save_every
        self.progress = progress or TrainingProgress()
        self.label = label or method
        self.key = f"{method}-{train_key(method, handle, hparams, cases, seed)}"
        self.finished = ArtifactCache(FINISHED_KIND, TORCH_CODEC)
        self.partial = ArtifactCache(PARTIAL_KIND, TORCH_CODEC)

    @property
    def path(self) -> Path:
        """Where the finished editor is (or will be) stored."""
        return self.finished.path(self.key)

    def generator(self, step: int) -> torch.Generator:
        """The random source of step `step` (which cases a batch draws, ...): a function of the
        seed and the step alone, so a resumed training draws what an uninterrupted one draws."""
        import torch

        return torch.Generator().manual_seed(int(content_key(self.seed, step)[:15], 16))

    def run(
        self,
        modules: Mapping[str, torch.nn.Module],
        optimizer: torch.optim.Optimizer,
        loss_at: Callable[[int], torch.Tensor],
    ) -> dict[str, Any]:
        """Train `modules` (their state is what is stored) with `optimizer` on `loss_at(step)` for
        steps not yet done, or load the finished editor. Returns the training's record: `steps`,
        `losses` (one per step, float) and `trained` (False when the stored editor was loaded)."""
        stored = self.finished.load(self.key)
        if stored is not None:
            _load_modules(modules, stored["modules"])
            self.progress.found(self.label, self.path)
            return {"steps": stored["steps"], "losses": stored["losses"], "trained": False}
        losses: list[float] = []
        start = 0
        partial = self.partial.load(self.key)
        seed_everything(self.seed)
        if partial is not None:
            import torch

            _load_modules(modules, partial["modules"])
            optimizer.load_state_dict(partial["optimizer"])
            torch.set_rng_state(partial["rng"])
            start, losses = int(partial["step"]), list(partial["losses"])
        self.progress.start(self.label, self.steps, start)
        for step in range(start, self.steps):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_at(step)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            self.progress.step(step + 1, losses[-1])
            if (step + 1) % self.save_every == 0 and step + 1 < self.steps:
                self._save_partial(modules, optimizer, step + 1, losses)
        state = {"modules": _states(modules), "steps": self.steps, "losses": losses}
        self.finished.store(self.key, state)
        self.partial.path(self.key).unlink(missing_ok=True)
        self.progress.finish(self.path)
        return {"steps": self.steps, "losses": losses, "trained": True}

    def _save_partial(
        self,
        modules: Mapping[str, torch.nn.Module],
        optimizer: torch.optim.Optimizer,
        step: int,
        losses: list[float],
    ) -> None:
        import torch

        state = {
            "modules": _states(modules),
            "optimizer": optimizer.state_dict(),
            "rng": torch.get_rng_state(),
            "step": step,
            "losses": losses,
        }
        self.partial.store(self.key, state)


def _states(modules: Mapping[str, torch.nn.Module]) -> dict[str, dict[str, Any]]:
    return {name: {k: v.detach().clone() for k, v in m.state_dict().items()} for name, m in modules.items()}


def _load_modules(modules: Mapping[str, torch.nn.Module], states: Mapping[str, Any]) -> None:
    for name, module in modules.items():
        module.load_state_dict(states[name])


def fit_method(
    method: Method,
    handle: ModelHandle,
    cases: Sequence[EditCase],
    hparams: Mapping[str, Any],
    progress: TrainingProgress,
    *,
    seed: int,
) -> None:
    """`method.fit(handle, cases, hparams)` after `seed_everything(seed)`, handing `progress` on to
    a `fit` that takes a `progress` keyword (trained editors); an older `fit` without it is called
    as before. `harness run` and `harness train` both fit through here, with the same seed for the
    same train task, so both reach the same stored editor."""
    seed_everything(seed)
    if "progress" in inspect.signature(method.fit).parameters:
        method.fit(handle, cases, hparams, progress=progress)
    else:
        method.fit(handle, cases, hparams)
