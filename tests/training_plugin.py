"""A trained method for the training tests: a small linear map learnt by `TrainingLoop`, so the
tests exercise the harness's checkpointing, resuming and reuse without a real editor's cost.

Also run as a script by the SIGKILL test: `python tests/training_plugin.py MODEL PAUSE`.
"""

from __future__ import annotations

import sys
import time
from typing import ClassVar

import torch
from test_runs_plugin import FactsTask, OtherFactsTask

from harness import hookimpl
from harness.api import AppliedEdit, Capabilities, Method
from harness.plugins import build_registry
from harness.training import TrainingLoop


class Toy(Method):
    """Learns W so that W x = 2 x on random x; `pause` seconds per step make a training long
    enough to be killed in the middle."""

    name = "toy-trained"
    capabilities = Capabilities(batch=True, sequential=True, needs_training=True, edits_weights=False)
    hparams_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "steps": {"type": "integer", "default": 12},
            "pause": {"type": "number", "default": 0},
            "seed": {"type": "integer", "default": 0},
        },
    }
    #: Steps computed in this process (the reuse test expects none the second time).
    steps_run: ClassVar[int] = 0

    def fit(self, handle, train_cases, hparams, *, progress=None):
        torch.manual_seed(hparams["seed"])
        self.net = torch.nn.Linear(4, 4)
        loop = TrainingLoop(
            self.name, handle, hparams, train_cases, seed=hparams["seed"], steps=hparams["steps"],
            save_every=3, progress=progress,
        )  # fmt: skip
        optimizer = torch.optim.Adam(self.net.parameters(), lr=0.05)

        def loss_at(step: int) -> torch.Tensor:
            Toy.steps_run += 1
            time.sleep(hparams["pause"])
            x = torch.randn(8, 4, generator=loop.generator(step))
            return ((self.net(x) - 2 * x) ** 2).mean()

        self.record = loop.run({"net": self.net}, optimizer, loss_at)
        self.path = loop.path

    def apply(self, handle, cases, hparams):
        return AppliedEdit()


class SameFactsTask(FactsTask):
    """A task whose train split is its test split (as `wiki_recent` offline, whose test file is missing)."""

    name = "same_facts"
    prefix = "s"

    def load(self, *, split="test", data_dir=None, skip_invalid=False):
        return super().load(split="test")


class Plugin:
    @hookimpl
    def harness_register_tasks(self, register):
        register("facts", FactsTask)
        register("other_facts", OtherFactsTask)
        register("same_facts", SameFactsTask)

    @hookimpl
    def harness_register_methods(self, register):
        register(Toy.name, Toy)


def registry():
    return build_registry(extra_plugins=[("training-test", Plugin())])


def main(model: str, pause: float) -> None:
    from harness.commands.train import TrainRequest, train
    from harness.runs.catalog import Catalog
    from harness.training import TrainingDisplay

    request = TrainRequest(
        method=Toy.name, task="facts", model=model, overrides={"pause": pause, "steps": 40}, device="cpu"
    )
    train(request, Catalog(registry()), TrainingDisplay(style="lines"))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
