"""The report's figures, drawn with matplotlib's Agg backend (no display needed). Each function
takes the numbers of `report` and returns a Figure; `save` writes it as PNG and SVG."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

#: Figure width in inches; heights follow the content.
WIDTH = 8.0
#: Colours of the four error kinds and of before/after bars.
COLOURS = ("#d95f02", "#7570b3", "#1b9e77", "#e7298a", "#66a61e", "#e6ab02")


def save(figure: Figure, folder: Path, name: str) -> Path:
    """`name`.png and `name`.svg in `folder`; returns the PNG's path. Closes the figure."""
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / f"{name}.png"
    figure.savefig(png, dpi=110, bbox_inches="tight")
    figure.savefig(folder / f"{name}.svg", bbox_inches="tight")
    plt.close(figure)
    return png


def stacked_kinds(shares: Mapping[str, Mapping[str, float]], kinds: Sequence[str]) -> Figure:
    """One stacked bar per method: the share of its failed edits of each kind (the study's error
    figure). shares: method -> kind -> share of failed edits."""
    figure, ax = plt.subplots(figsize=(WIDTH, 3.5))
    methods = list(shares)
    bottom = [0.0] * len(methods)
    for kind, colour in zip(kinds, COLOURS, strict=False):
        values = [shares[m].get(kind, 0.0) for m in methods]
        ax.bar(methods, values, bottom=bottom, label=kind, color=colour)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("share of failed edits")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return figure


def sparsity_heatmaps(profiles: Mapping[str, Mapping[int, Sequence[float]]]) -> Figure:
    """Per method, a heatmap of where ΔW's change lies: rows the edited layers, columns bins of
    the matrix's input columns, colour the bin's share of ‖ΔW‖² (each row sums to 1).
    profiles: method -> layer -> bin shares."""
    figure, axes = plt.subplots(len(profiles), 1, figsize=(WIDTH, 1.2 + 1.1 * len(profiles)), squeeze=False)
    for ax, (method, layers) in zip(axes[:, 0], profiles.items(), strict=True):
        ordered = sorted(layers)
        image = ax.imshow([layers[layer] for layer in ordered], aspect="auto", cmap="magma", vmin=0)
        ax.set_yticks(range(len(ordered)), [str(layer) for layer in ordered])
        ax.set_ylabel(f"{method}\nlayer")
        figure.colorbar(image, ax=ax, label="share of ‖ΔW‖²")
    axes[-1, 0].set_xlabel("column bin of ΔW (input features, in order)")
    return figure


def per_layer_lines(values: Mapping[str, Mapping[int, float]], ylabel: str, *, log: bool = False) -> Figure:
    """One line (markers) per method over layers. values: method -> layer -> value."""
    figure, ax = plt.subplots(figsize=(WIDTH, 3.2))
    for (method, layers), colour in zip(values.items(), COLOURS, strict=False):
        ordered = sorted(layers)
        ax.plot(ordered, [layers[layer] for layer in ordered], marker="o", label=method, color=colour)
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.legend(frameon=False)
    return figure


def grouped_bars(
    values: Mapping[str, Mapping[str, float]], ylabel: str, *, ylim: float | None = 1.0
) -> Figure:
    """Bars grouped per method, one bar per series. values: method -> series -> value."""
    figure, ax = plt.subplots(figsize=(WIDTH, 3.2))
    methods = list(values)
    series = list(dict.fromkeys(s for v in values.values() for s in v))
    width = 0.8 / max(len(series), 1)
    for i, (name, colour) in enumerate(zip(series, COLOURS, strict=False)):
        xs = [m + (i - (len(series) - 1) / 2) * width for m in range(len(methods))]
        ax.bar(xs, [values[m].get(name, 0.0) for m in methods], width=width, label=name, color=colour)
    ax.set_xticks(range(len(methods)), methods)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(0, ylim)
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1))
    return figure


def trace_heatmap(
    effects: Sequence[Sequence[float]], tokens: Sequence[str], subject: range, title: str
) -> Figure:
    """Causal tracing of one fact: the effect of restoring each layer (columns) at each token
    (rows); subject tokens are starred. effects [layers][tokens]."""
    rows = [[effects[layer][t] for layer in range(len(effects))] for t in range(len(tokens))]
    figure, ax = plt.subplots(figsize=(WIDTH, 0.9 + 0.3 * len(tokens)))
    image = ax.imshow(rows, aspect="auto", cmap="Purples")
    labels = [f"{t!r}*" if i in subject else repr(t) for i, t in enumerate(tokens)]
    ax.set_yticks(range(len(tokens)), labels)
    ax.set_xlabel("restored layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title, fontsize=10)
    figure.colorbar(image, ax=ax, label="p(answer) restored − corrupted")
    return figure


def curves(series: Mapping[str, Sequence[tuple[float, float]]], xlabel: str, ylabel: str) -> Figure:
    """Lines with markers: name -> [(x, y)]."""
    figure, ax = plt.subplots(figsize=(WIDTH, 3.2))
    for (name, points), colour in zip(series.items(), COLOURS, strict=False):
        ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=name, color=colour)
    ax.set_xlabel(xlabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False)
    return figure


def trend_panels(panels: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]]) -> Figure:
    """One panel per metric (three a row): per method its value after N sequential edits, N on a
    log axis ticked at the measured N. panels: metric -> method -> [(N, value)]."""
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(WIDTH, 2.8 * rows), squeeze=False)
    for ax, (metric, methods) in zip(axes.flat, panels.items(), strict=False):
        ns = sorted({n for points in methods.values() for n, _ in points})
        for (method, points), colour in zip(methods.items(), COLOURS, strict=False):
            ax.plot([n for n, _ in points], [v for _, v in points], marker="o", label=method, color=colour)
        ax.set_xscale("log")
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.minorticks_off()
        ax.set_xlabel("edits (N)")
        ax.set_title(metric, fontsize=10)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    legend = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    figure.legend(
        list(legend.values()),
        list(legend),
        frameon=False,
        loc="upper center",
        ncol=4,
        bbox_to_anchor=(0.5, 1.04),
    )
    figure.tight_layout()
    return figure


def radar(values: Mapping[str, Mapping[str, float]], axes_names: Sequence[str]) -> Figure:
    """A radar chart: one polygon per method over `axes_names`, values in [0, 1].
    values: method -> axis -> value."""
    angles = [2 * math.pi * i / len(axes_names) for i in range(len(axes_names))]
    figure = plt.figure(figsize=(5.5, 5.5))
    ax = figure.add_subplot(projection="polar")
    for (method, scores), colour in zip(values.items(), COLOURS, strict=False):
        points = [scores.get(name, 0.0) for name in axes_names]
        ax.plot([*angles, angles[0]], [*points, points[0]], label=method, color=colour)
        ax.fill([*angles, angles[0]], [*points, points[0]], alpha=0.1, color=colour)
    ax.set_xticks(angles, list(axes_names))
    ax.set_ylim(0, 1)
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.05, 1.1))
    return figure
