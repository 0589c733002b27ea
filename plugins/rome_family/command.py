"""`harness stats`: compute second-moment statistics ahead of a run, so that no edit waits for them.

The command reaches the CLI through this package's `harness_register_commands` hook; `harness --help`
lists it without importing this module, and the module imports torch only when the command runs."""

from __future__ import annotations

import time

import click

from harness.api import HarnessError


def _layers(value: str) -> list[int]:
    """ "4,5,6" or "4-8" (inclusive) or a mix: "2,4-6"."""
    layers: list[int] = []
    for part in filter(None, (p.strip() for p in value.split(","))):
        lo, sep, hi = part.partition("-")
        try:
            layers.extend(range(int(lo), int(hi) + 1) if sep else [int(part)])
        except ValueError:
            raise HarnessError(f"--layers expects numbers like 4,5,6 or 4-8, got {value!r}") from None
    if not layers:
        raise HarnessError("--layers names no layer")
    return layers


@click.command("stats")
@click.option("--model", "model_spec", default="smollm2-135m", show_default=True, help="Model name or path.")
@click.option("--layers", required=True, help="Layers, e.g. 4,5,6,7 or 4-7.")
@click.option(
    "--corpus",
    default="model",
    show_default=True,
    help="'model' (text sampled from the model), a .txt/.jsonl file or folder, or datasets:ID[:CONFIG].",
)
@click.option("--samples", default=256, show_default=True, type=click.IntRange(min=1), help="Texts to use.")
@click.option("--tokens", default=128, show_default=True, type=click.IntRange(min=2), help="Tokens per text.")
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(["float32", "float64"]))
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def command(
    model_spec: str, layers: str, corpus: str, samples: int, tokens: int, dtype: str, device: str
) -> None:
    """Precompute the second-moment statistics C = E[k kᵀ] of MLP down-projection inputs.

    The values match the `mom2_*` hyperparameters of rome and memit; a run with the same model and
    values then loads them from the cache instead of computing them."""
    from harness.api import load_model
    from harness_plugins.rome_family.second_moment import StatsConfig, cached_layers, second_moments

    wanted = _layers(layers)
    handle = load_model(model_spec, device=device)
    config = StatsConfig(corpus=corpus, samples=samples, tokens=tokens, dtype=dtype)
    cached = cached_layers(handle, wanted, config)
    if cached:
        click.echo(f"already cached: layer(s) {', '.join(map(str, cached))}")
    start = time.perf_counter()
    stats = second_moments(handle, wanted, config, progress=True)
    seconds = time.perf_counter() - start
    for layer in wanted:
        c = stats[layer]
        click.echo(f"layer {layer}: C {tuple(c.shape)}, trace {float(c.trace()):.4g}")
    if len(cached) < len(wanted):
        click.echo(f"computed {len(wanted) - len(cached)} layer(s) in {seconds:.1f} s")
