"""What the locate-then-edit methods share (ROME, MEMIT, and the relatives built on them), one job
per module, written against `harness.api` only:

- `keys`: where an edit's subject is and what a layer reads there (k*, hidden states);
- `values`: the optimised value δ a layer must write at the subject (v* = W k* + δ);
- `second_moment`: the statistics C = E[k kᵀ] of the MLP input, cached on disk;
- `nullspace`: AlphaEdit's projection onto the null space of C, cached on disk;
- `templates`: the context prefixes keys and values are averaged over;
- `updates`: the closed-form weight updates of the papers, on plain tensors;
- `weights`: reading and writing a layer's MLP output matrix whatever the family stores;
- `losses`: the answer-token losses (fine-tuning uses them as well);
- `command`: `harness stats`, which fills the statistics cache ahead of a run.

The method classes live in `harness_plugins.methods` and import from here. This module is the
package's plugin entry point: it registers the `stats` command lazily, so loading it for
`harness --help` imports neither torch nor the command.
"""

from harness.api import hookimpl


@hookimpl
def harness_register_commands(register):
    register(
        "stats",
        "harness_plugins.rome_family.command:command",
        description="Precompute second-moment statistics.",
    )
