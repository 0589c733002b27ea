"""knowedit-mini: the six KnowEdit formats on a small authored sample that ships with the package.

The records live in `data/knowedit_mini/` next to this module, one file per format, so these tasks
need no `--data-dir`, no environment variable and no network: `harness run --suite knowedit-mini`
works on a fresh machine. Each task is its full-size counterpart (same record format, same
normalization, same default metrics) pointed at the bundled file; how the records were written
and checked against SmolLM2-135M is in docs/datasets.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from harness_plugins.tasks.base import RecordTask
from harness_plugins.tasks.knowedit import ConvSent, Sanitation, WikiBio, WikiCounterfact, WikiRecent, ZsRE

#: The folder (inside the installed package) holding the sample's files.
MINI_FOLDER = "data/knowedit_mini"


def mini_file(name: str) -> Path:
    """The installed path of one bundled sample file."""
    return Path(str(resources.files("harness_plugins.tasks").joinpath(f"{MINI_FOLDER}/{name}")))


class MiniTask(RecordTask):
    """A full-size task reading its bundled sample file (its only split: test).

    Explicit `paths` still win, so a dataset spec naming this record format reads the user's files.
    """

    data_file: ClassVar[str]

    def __init__(self, *, paths: Mapping[str, str | os.PathLike[str]] | None = None, **kwargs: Any) -> None:
        super().__init__(paths=paths or {"test": mini_file(self.data_file)}, **kwargs)


class MiniZsRE(MiniTask, ZsRE):
    name = "mini_zsre"
    data_file = "zsre.json"


class MiniWikiRecent(MiniTask, WikiRecent):
    name = "mini_wiki_recent"
    data_file = "wiki_recent.json"


class MiniWikiCounterfact(MiniTask, WikiCounterfact):
    name = "mini_wiki_counterfact"
    data_file = "wiki_counterfact.json"


class MiniWikiBio(MiniTask, WikiBio):
    name = "mini_wikibio"
    data_file = "wikibio.json"


class MiniConvSent(MiniTask, ConvSent):
    name = "mini_convsent"
    data_file = "convsent.json"


class MiniSanitation(MiniTask, Sanitation):
    name = "mini_sanitation"
    data_file = "sanitation.json"
