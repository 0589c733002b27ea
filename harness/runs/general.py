"""The runner's side of the general-capability check (`--general`): when to call lm-eval, and
what of its answer goes into the manifest and the summary. The lm-eval adapter itself is
harness.general."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GeneralCheck:
    tasks: tuple[str, ...]
    include_path: str | None = None
    limit: int | None = None
    seed: int = 0
    #: lm-eval puts its prompts in the model's chat template too (`--chat-template`).
    chat_template: bool = False

    def _kwargs(self) -> dict[str, Any]:
        return {
            "include_path": self.include_path,
            "limit": self.limit,
            "seed": self.seed,
            "chat_template": self.chat_template,
        }

    def check(self) -> None:
        """Refuse, before any model loads, a task lm-eval cannot build (unknown, or its data not to
        be had offline): see `harness.general.check_tasks`."""
        from harness.general import check_tasks

        check_tasks(list(self.tasks), include_path=self.include_path)

    def before(self, handle: Any) -> dict[str, Any]:
        """The unedited model's figures (cached on disk by fingerprint): call before any edit."""
        from harness.general import general_before

        return general_before(handle, list(self.tasks), **self._kwargs())

    def after(self, handle: Any, before: dict[str, Any], edits: int) -> dict[str, dict[str, Any]]:
        """Per task: the headline metric before and after `edits` edits, with lm-eval provenance."""
        from harness.general import evaluate_general

        after = evaluate_general(handle, list(self.tasks), **self._kwargs())
        return {
            name: {
                "metric": after[name].metric,
                "before": before[name].value,
                "after": after[name].value,
                "edits": edits,
                "provenance": after[name].to_json(),
            }
            for name in self.tasks
        }


def summary_view(record: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The part of a job's general record that summary.json carries."""
    return {name: {k: entry[k] for k in ("metric", "before", "after")} for name, entry in record.items()}
