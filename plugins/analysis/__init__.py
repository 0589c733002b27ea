"""`harness analyze RUN_DIR`: the KnowEdit study's analyses of a run (Zhang et al. 2024, "A
Comprehensive Study of Knowledge Editing for Large Language Models", Sec. 5) as a self-contained
HTML report with its figures (PNG and SVG) and numbers (JSON). One module per job:

- `taxonomy`: the four kinds of failed edits, by written rules over greedy generations;
- `weights`: ΔW of an edit, its sparsity over columns, its top columns in the vocabulary space;
- `replay`: a run's edits applied again as the run applied them (generations and ΔW);
- `tracing`: causal tracing and the RSim overlap of the layers it locates;
- `facts`: fact, related-fact and unrelated-fact triples from MQuAKE's multi-hop chains;
- `figures`: the matplotlib figures; `report`: the numbers and the page; `command`: the command.

It is written against `harness.api` only, so it analyses any run, third-party methods included.
This module is the package's plugin entry point: it registers the command lazily, so `harness
--help` imports neither torch nor matplotlib.
"""

from harness.api import hookimpl


@hookimpl
def harness_register_commands(register):
    register(
        "analyze",
        "harness_plugins.analysis.command:command",
        description="The study's analyses of a run as an HTML report with figures.",
    )
