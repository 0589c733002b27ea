"""The report page (report.html): one section per analysis, in the order docs/analyze.md explains
them, each with its prose, figures (also saved as PNG and SVG), tables and notes."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness_plugins.analysis import figures, report, taxonomy

#: Section anchor -> (heading, what it shows).
SECTIONS = {
    "taxonomy": (
        "Error taxonomy",
        "Failed edits (an edit-success score below 1 in the run) sorted into the study's four "
        "kinds by written rules over the edited model's greedy generation for the edit prompt "
        "(docs/analyze.md states them). A generation that starts with the target is counted apart.",
    ),
    "cases": (
        "Case study",
        "The edit prompt and each method's greedy generation side by side; the "
        '<mark class="target">target</mark> and the <mark class="old">old answer</mark> are marked.',
    ),
    "weights": (
        "Weight change",
        "ΔW = W after − W before of every matrix an edit changed, as [d_out, d_in]. The heatmap "
        "shows, per method and edited layer, where ‖ΔW‖² lies over the matrix's columns (input "
        "features in 64 bins); the top-column share is the part of ‖ΔW‖² in the largest 1% of "
        "columns (1: one column; 0.01: spread evenly); the norm is ‖ΔW‖_F. Means over the edits.",
    ),
    "vocabulary": (
        "Vocabulary space",
        "The 5 columns of ΔW with the largest norm (over the changed matrices that write the "
        "residual stream) read through the unembedding. Hit@k: the share of edits whose target's "
        "first token is among the top k tokens of one of those columns of W before the edit, and "
        "of W + ΔW after it.",
    ),
    "locating": (
        "Knowledge locating",
        "Causal tracing (Meng et al. 2022): noise corrupts the subject's embeddings and one "
        "layer's clean hidden state is restored at one token; the effect is the answer's "
        "probability restored minus corrupted. RSim at k: the overlap (Jaccard) of the k layers "
        "of largest effect of a fact and of a related fact (the next hop of its MQuAKE chain) or "
        "of an unrelated fact of the same subject.",
    ),
    "trends": (
        "Trends",
        "Continual editing: each headline metric after N sequential edits (the run's after-N "
        "rows); and a radar chart of each method's single-edit headline metrics (fractions as "
        "they are, other units scaled by the best method's value).",
    ),
}


class Page:
    """A report page under construction; `html()` wraps it in the shared page style."""

    def __init__(self, title: str, intro: str, folder: Path) -> None:
        self.title = title
        self.folder = folder
        self.parts = [f"<h1>{html.escape(title)}</h1>\n<p>{intro}</p>\n"]

    def section(self, anchor: str) -> None:
        heading, prose = SECTIONS[anchor]
        self.parts.append(f'<h2 id="{anchor}">{html.escape(heading)}</h2>\n<p>{prose}</p>\n')

    def figure(self, figure: Any, name: str, caption: str) -> None:
        """Save the matplotlib figure as `name`.png/.svg and embed the PNG."""
        self.parts.append(report.figure_html(figures.save(figure, self.folder, name), caption))

    def note(self, text: str) -> None:
        self.parts.append(f'<p class="note">{html.escape(text)}</p>\n')

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]], *, text: bool = False) -> None:
        """A table of HTML cells (escape text before); `text`: every column left-aligned."""
        self.parts.append(report.table_html(headers, rows, css="text" if text else ""))

    def html(self) -> str:
        from harness.api import html_page

        return html_page(self.title, "".join(self.parts))


def _by_layer(weights: Mapping[str, Mapping[int, Mapping[str, Any]]], key: str) -> dict[str, dict[int, Any]]:
    return {m: {layer: v[key] for layer, v in layers.items()} for m, layers in weights.items()}


def _taxonomy(page: Page, numbers: Mapping[str, Any]) -> None:
    page.section("taxonomy")
    tax = numbers["taxonomy"]
    shares = report.kind_shares(tax)
    if shares:
        page.figure(
            figures.stacked_kinds(shares, taxonomy.KINDS), "taxonomy", "Kinds of failed edits per method"
        )
    else:
        page.note("No failed edit among the edits applied again.")
    kinds = (*taxonomy.KINDS, taxonomy.TARGET)
    rows = [
        [html.escape(m), str(e["edits"]), str(e["failed"]), *(str(e["kinds"].get(k, 0)) for k in kinds)]
        for m, e in tax.items()
    ]
    page.table(["method", "edits", "failed", *kinds], rows)


def _cases(page: Page, numbers: Mapping[str, Any]) -> None:
    page.section("cases")
    study = numbers["case_study"]
    if not study:
        page.note("No case was edited by every method.")
        return
    methods = list(study[0]["generations"])
    rows = [
        [
            html.escape(c["case_id"]),
            html.escape(c["prompt"]),
            f'<mark class="target">{html.escape(c["target"])}</mark>',
            f'<mark class="old">{html.escape(c["old"])}</mark>',
            *(report.highlight(c["generations"][m], c["target"], c["old"]) for m in methods),
        ]
        for c in study
    ]
    page.table(["case", "prompt", "target", "old answer", *methods], rows, text=True)


def _weights(page: Page, numbers: Mapping[str, Any]) -> None:
    page.section("weights")
    weights = numbers["weights"]
    if not weights:
        page.note("No method of the run changed a weight matrix in place.")
        return
    heatmap = figures.sparsity_heatmaps(_by_layer(weights, "profile"))
    page.figure(heatmap, "weight-sparsity", "Where ΔW lies over its columns, per method and layer")
    shares = figures.per_layer_lines(_by_layer(weights, "top_share"), "share of ‖ΔW‖² in the top 1% columns")
    page.figure(shares, "weight-top-share", "Top-column share per layer")
    norms = figures.per_layer_lines(_by_layer(weights, "norm"), "‖ΔW‖_F", log=True)
    page.figure(norms, "weight-norm", "Norm of the change per layer")


def _vocabulary(page: Page, numbers: Mapping[str, Any]) -> None:
    page.section("vocabulary")
    vocab = numbers["vocabulary"]
    if not vocab:
        page.note("No method changed a matrix that writes the residual stream.")
        return
    hits = figures.grouped_bars({m: e["hits"] for m, e in vocab.items()}, "share of edits")
    page.figure(hits, "vocab-hits", "Hit@10 and Hit@50 of the target token before and after the edit")
    rows = [
        [
            html.escape(m),
            html.escape(e["example"]["case_id"]),
            html.escape(e["example"]["target"]),
            html.escape(" ".join(repr(t) for t in e["example"]["columns"][0])),
        ]
        for m, e in vocab.items()
    ]
    page.table(["method", "case", "target", "top tokens of ΔW's largest column"], rows, text=True)


def _locating(
    page: Page, numbers: Mapping[str, Any], traces: Sequence[Mapping[str, Any]], mquake: Path | None
) -> None:
    page.section("locating")
    locating = numbers["locating"]
    if not locating:
        where = "no MQuAKE file was found" if mquake is None else f"{mquake} gave no usable fact triple"
        page.note(f"Not traced: {where}; pass --mquake FILE.")
        return
    first = traces[0]["fact"]
    title = f"{first.prompt!r} → {first.answer!r}: p {first.clean:.2f} clean, {first.corrupted:.2f} corrupted"
    grid = figures.trace_heatmap(first.grid.tolist(), first.tokens, first.subject, title)
    page.figure(grid, "locating-trace", "Causal trace of one fact (* marks the subject's tokens)")
    layers = {role: list(enumerate(t.by_layer.tolist())) for role, t in traces[0].items()}
    curve = figures.curves(layers, "layer", "effect at the subject's last token")
    page.figure(curve, "locating-layers", "Effect per layer of a fact, its related and its unrelated fact")
    rsim = {
        "related fact": list(zip(locating["k"], locating["related"], strict=True)),
        "unrelated fact": list(zip(locating["k"], locating["unrelated"], strict=True)),
    }
    caption = f"RSim over the number of top layers, mean over {len(traces)} fact triples"
    page.figure(figures.curves(rsim, "top-k layers", "RSim"), "locating-rsim", caption)


def _trends(page: Page, numbers: Mapping[str, Any]) -> None:
    page.section("trends")
    if numbers["trends"]:
        page.figure(
            figures.trend_panels(numbers["trends"]), "trends", "Headline metrics after N sequential edits"
        )
    else:
        page.note(
            "The run has no sequential after-N rows (a run with --mode sequential --eval-at 10,100 has them)."
        )
    radar = numbers["radar"]
    if radar:
        axes = list(dict.fromkeys(k for v in radar.values() for k in v))
        page.figure(figures.radar(radar, axes), "radar", "Headline metrics per method")


def build_page(
    numbers: Mapping[str, Any], traces: Sequence[Mapping[str, Any]], folder: Path, mquake: Path | None
) -> Page:
    """The page of `numbers` (report.json's content) and the `traces` behind its locating section;
    figures are saved into `folder`."""
    intro = (
        f"Run <code>{html.escape(numbers['run'])}</code>, model {html.escape(', '.join(numbers['models']))}: "
        f"{numbers['edits_replayed']} edits applied again with the run's seeds and hyperparameters. "
        "Each figure is also a PNG and an SVG file in figures/; every number is in report.json."
    )
    page = Page("knowedit-harness analysis", intro, folder)
    _taxonomy(page, numbers)
    _cases(page, numbers)
    _weights(page, numbers)
    _vocabulary(page, numbers)
    _locating(page, numbers, traces, mquake)
    _trends(page, numbers)
    return page
