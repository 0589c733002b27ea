"""The HTML leaderboard as a browser shows it: headless Chromium (Debian's package, which .ci/run
installs) loads the page, and the DOM it built and a screenshot are checked: the runs with their
model, dates, status and versions, the best value of each row by the metric's direction, and a
tooltip per metric."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness.ground import MetricInfo
from harness.runs.leaderboard import merge, render, run_facts

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INFO = {
    "edit_succ": MetricInfo(headline=0, edit_success=True).to_json(),
    "perplexity": MetricInfo(unit="perplexity", higher_is_better=False).to_json(),
}
DESCRIPTIONS = {"edit_succ": "token accuracy of target_new", "perplexity": "of target_new after the prompt"}


def chromium(tmp_path: Path, page: Path, *args: str) -> str:
    """Chromium's stdout for `page` with `args`, in a fresh profile."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed: `apt-get install -y chromium` (.ci/run does it)")
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    command = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def run_dir(tmp_path: Path, name: str, status: str, results: list[dict]) -> dict:
    """A run folder with a manifest, and its summary as `load_summary` returns it."""
    folder = tmp_path / name
    folder.mkdir()
    manifest = {
        "status": status,
        "started": "2026-11-30T09:00:00+00:00",
        "ended": "2026-11-30T09:42:00+00:00",
        "models": {"smollm2-135m": {}},
        "versions": {
            "harness": "0.1.0",
            "python": "3.11.7",
            "packages": {"torch": "2.13.0+cpu", "transformers": "5.24.0"},
            "plugins": {"nudge": {"distribution": "knowedit-harness-nudge", "version": "0.2.0"}},
        },
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return {"results": results, "metric_info": INFO, "status": status, "source": str(folder)}


def result(method: str, edit_succ: float, perplexity: float) -> dict:
    return {
        "model": "smollm2-135m",
        "method": method,
        "task": "zsre",
        "mode": "single",
        "n_cases": 20,
        "metrics": {"edit_succ": edit_succ, "perplexity": perplexity},
    }


class Cells(HTMLParser):
    """The table cells of a page: (tag, attributes, text) in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[tuple[str, dict[str, str | None], str]] = []
        self._open: tuple[str, dict[str, str | None]] | None = None

    def handle_starttag(self, tag, attrs):
        if tag in ("td", "th"):
            self._open = (tag, dict(attrs))
            self.cells.append((tag, dict(attrs), ""))

    def handle_data(self, data):
        if self._open is not None:
            tag, attrs, text = self.cells[-1]
            self.cells[-1] = (tag, attrs, text + data)

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._open = None


def test_the_page_chromium_renders_has_runs_best_values_and_metric_tooltips(tmp_path):
    summaries = [
        run_dir(tmp_path, "a", "finished", [result("rome", 0.9, 1.4), result("ft-l", 0.6, 6.5)]),
        run_dir(tmp_path, "b", "interrupted", [result("memit", 0.9, 1.2)]),
    ]
    page = tmp_path / "leaderboard.html"
    runs = [run_facts(s) for s in summaries]
    page.write_text(render(merge(summaries), "html", "knowedit", runs=runs, descriptions=DESCRIPTIONS))

    parser = Cells()
    parser.feed(chromium(tmp_path, page, "--dump-dom"))
    cells = parser.cells
    texts = [text for _, _, text in cells]
    assert texts[:6] == ["run", "model", "started", "ended", "status", "versions"]
    versions = (
        "harness 0.1.0, python 3.11.7, torch 2.13.0+cpu, transformers 5.24.0, knowedit-harness-nudge 0.2.0"
    )
    first_run = [
        str(tmp_path / "a"),
        "smollm2-135m",
        "2026-11-30 09:00 UTC",
        "2026-11-30 09:42 UTC",
        "finished",
    ]
    assert texts[6:12] == [*first_run, versions]
    assert texts[16] == "interrupted" and "partial" in page.read_text()

    rows = {}
    metric_cells = {
        text: (i, attrs) for i, (tag, attrs, text) in enumerate(cells) if text in INFO and tag == "td"
    }
    for metric, (i, attrs) in metric_cells.items():
        rows[metric] = [(text, attrs.get("class")) for _, attrs, text in cells[i + 1 : i + 4]]
        assert attrs["title"].startswith(f"{metric}: {DESCRIPTIONS[metric]}")
    assert "higher is better" in metric_cells["edit_succ"][1]["title"]
    assert "in perplexity; lower is better" in metric_cells["perplexity"][1]["title"]
    # Columns rome, ft-l, memit: the highest edit success (a tie) and the lowest perplexity.
    assert rows["edit_succ"] == [("90.00", "best"), ("60.00", None), ("90.00", "best")]
    assert rows["perplexity"] == [("1.40", None), ("6.50", None), ("1.20", "best")]

    screenshot = tmp_path / "leaderboard.png"
    chromium(tmp_path, page, f"--screenshot={screenshot}", "--window-size=1200,800")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000
