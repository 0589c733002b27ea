"""`harness analyze`: each analysis checked against a small computation made by hand (Hit@k of a
hand-made ΔW, the taxonomy rule on hand-written generations, causal tracing on the tiny model where
restoring every layer gives the clean output back), then the whole report of a tiny run, as
headless Chromium renders it."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from harness.cli import cli
from harness_plugins.analysis import report, taxonomy
from harness_plugins.analysis.facts import fact_triples
from harness_plugins.analysis.replay import vocabulary_view
from harness_plugins.analysis.tracing import Trace, Tracer, causal_trace, rsim
from harness_plugins.analysis.weights import Change, changes, hit_at_k, top_columns, top_share

# -- vocabulary space and sparsity on a hand-made ΔW --------------------------------------------

#: U [vocab 8, d 4]: tokens 0-3 read one axis each, token 4 reads axes 0 and 1 at half weight,
#: tokens 5-7 read nothing.
UNEMBEDDING = torch.tensor(
    [
        [1.0, 0, 0, 0],
        [0, 1, 0, 0],
        [0, 0, 1, 0],
        [0, 0, 0, 1],
        [0.5, 0.5, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ]
)


def test_hit_at_k_of_a_hand_made_column():
    # column 3·e2 + 2·e0: logits 2 (token 0), 0 (1), 3 (2), 0 (3), 1 (4), 0...: ranking 2, 0, 4, ...
    column = torch.tensor([[2.0], [0.0], [3.0], [0.0]])
    assert hit_at_k(column, UNEMBEDDING, 2, 1)
    assert not hit_at_k(column, UNEMBEDDING, 0, 1)
    assert hit_at_k(column, UNEMBEDDING, 0, 2)
    assert not hit_at_k(column, UNEMBEDDING, 4, 2)
    assert hit_at_k(column, UNEMBEDDING, 4, 3)


def test_top_columns_and_top_share_of_a_hand_made_delta():
    delta = torch.zeros(4, 200)
    delta[:, 7] = 3.0  # energy 36
    delta[:, 11] = 1.0  # energy 4
    assert top_columns(delta, 2) == [7, 11]
    assert top_share(delta, 0.005) == pytest.approx(36 / 40)  # one column of 200
    assert top_share(torch.ones(4, 200), 0.01) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="zero"):
        top_share(torch.zeros(4, 200))


def test_vocabulary_view_reads_before_and_after_through_the_unembedding():
    # 60 more tokens that read axis 0 weakly (0.01 to 0.6): they outrank token 3 on any column
    # that writes axis 0 and nothing on axis 3
    weak = torch.zeros(60, 4)
    weak[:, 0] = torch.arange(1, 61) / 100
    unembedding = torch.cat([UNEMBEDDING, weak])
    before = torch.zeros(4, 6)
    before[0, :] = 1.0  # every column of W writes axis 0
    delta = torch.zeros(4, 6)
    delta[3, 2] = 5.0  # the edit writes axis 3 (token 3) into column 2
    delta[1, 4] = 0.1  # and a little axis 1 into column 4
    found = [Change("layers.1.mlp.down_proj.weight", 1, delta, before)]
    hits, words = vocabulary_view(found, unembedding, 3, lambda ids: f"t{ids[0]}")
    # before, column 2 of W is e0: token 3 (logit 0) ranks behind tokens 0, 4 and the 60 weak ones;
    # after, it is e0 + 5·e3: token 3 first
    assert hits == {"before@10": False, "after@10": True, "before@50": False, "after@50": True}
    assert words[0][0] == "t3" and words[1][0] == "t1"  # ΔW's columns 2 then 4, each read alone
    assert vocabulary_view(found, torch.zeros(8, 5), 3, str) == ({}, [])  # no matrix of width 5


def test_changes_finds_the_changed_matrices_in_the_papers_orientation():
    before = {
        "model.layers.0.w": torch.zeros(2, 3),
        "model.layers.1.w": torch.ones(2, 3),
        "model.norm": torch.ones(3),
    }
    after = {**before, "model.layers.1.w": torch.ones(2, 3) * 2, "model.norm": torch.zeros(3)}
    (found,) = changes(before, after, {0: "model.layers.0", 1: "model.layers.1"}, transposed=True)
    assert found.name == "model.layers.1.w" and found.layer == 1
    assert found.delta.shape == (3, 2) and torch.equal(found.delta, torch.ones(3, 2))


# -- the error taxonomy on hand-written generations ---------------------------------------------


@pytest.mark.parametrize(
    ("generation", "target", "kind"),
    [
        (" ... ... !!! ###", "Lionel Messi", taxonomy.MEANINGLESS),
        (" the the the the the", "Lionel Messi", taxonomy.MEANINGLESS),
        ("rano?rano?rano?rano?rano?", "mezzo soprano", taxonomy.MEANINGLESS),
        (" Messi, who plays for", "Lionel Messi", taxonomy.MISSING),
        (" a small town in Germany.", "Lionel Messi", taxonomy.IRRELEVANT),
        (" New York Mets since 1962", "New York Yankees", taxonomy.REPLACED),
        (" Lionel Messi, the Argentine", "Lionel Messi", taxonomy.TARGET),
    ],
)
def test_taxonomy_rule_on_hand_written_generations(generation, target, kind):
    assert taxonomy.classify(generation, target) == kind


def test_case_study_marks_target_and_old_answer_as_whole_words():
    marked = report.highlight("male, female <b>", "male", "Female")
    assert marked == '<mark class="target">male</mark>, <mark class="old">female</mark> &lt;b&gt;'


def test_taxonomy_refuses_a_target_without_words():
    with pytest.raises(ValueError, match="no word"):
        taxonomy.classify("text", "!!")


# -- causal tracing on the tiny model -----------------------------------------------------------


def test_restoring_every_layer_at_every_token_gives_the_clean_output(tiny_llama):
    tracer = Tracer(tiny_llama, "The capital of France is", "France", samples=3, seed=1)
    clean, states = tracer.clean()
    layers = range(tiny_llama.adapter.num_layers)
    every = {layer: range(len(states[0])) for layer in layers}
    restored, corrupted = tracer.patched([every, {}], states)
    assert torch.allclose(restored, clean, rtol=1e-5, atol=1e-9)
    assert not torch.allclose(corrupted, clean, rtol=1e-2, atol=0)  # the noise did change the output


def test_causal_trace_effects_are_restored_minus_corrupted(tiny_llama):
    trace = causal_trace(
        tiny_llama, "The capital of France is", "France", every_token=True, samples=3, seed=1
    )
    tracer = Tracer(tiny_llama, "The capital of France is", "France", samples=3, seed=1)
    clean, states = tracer.clean()
    last = trace.subject[-1]
    layer = tiny_llama.adapter.num_layers - 1
    restored = float(tracer.patched([{layer: [last]}], states)[0, trace.answer_id])
    assert trace.answer_id == int(clean.argmax()) and trace.clean == pytest.approx(float(clean.max()))
    assert float(trace.by_layer[layer]) == pytest.approx(restored - trace.corrupted, abs=1e-6)
    assert trace.grid.shape == (tiny_llama.adapter.num_layers, len(trace.tokens))
    assert torch.allclose(trace.grid[:, last], trace.by_layer, atol=1e-6)


def _trace(by_layer: list[float]) -> Trace:
    return Trace("", [], range(1), 0, "", 1.0, 0.0, torch.tensor(by_layer))


def test_rsim_is_the_overlap_of_the_top_layers():
    a, b = _trace([0.9, 0.8, 0.1, 0.0]), _trace([0.0, 0.7, 0.9, 0.1])
    assert rsim(a, b, 1) == 0.0  # {0} vs {2}
    assert rsim(a, b, 2) == pytest.approx(1 / 3)  # {0, 1} vs {1, 2}
    assert rsim(a, b, 4) == 1.0


def mquake_records() -> list[dict]:
    """Two MQuAKE-shaped chains whose first hops share a subject under different relations."""

    def record(hops):
        return {
            "single_hops": [{"cloze": cloze, "answer": obj} for cloze, _, _, obj in hops],
            "orig": {
                "triples_labeled": [[s, r, o] for _, s, r, o in hops],
                "triples": [[s, r, o] for _, s, r, o in hops],
            },
        }

    first = record(
        [
            ("The capital of France is", "France", "P36", "Paris"),
            ("Paris is located in", "Paris", "P17", "Europe"),
        ]
    )
    second = record(
        [
            ("The language of France is", "France", "P37", "French"),
            ("French is spoken in", "French", "P17", "Quebec"),
        ]
    )
    return [first, second]


def test_fact_triples_pair_a_fact_with_its_next_hop_and_another_relation_of_its_subject():
    triples = list(fact_triples(mquake_records()))
    assert [t.fact.prompt for t in triples] == ["The capital of France is"]
    (triple,) = triples
    assert triple.related.prompt == "Paris is located in" and triple.related.subject == "Paris"
    assert triple.unrelated.prompt == "The language of France is"


# -- numbers from a summary -----------------------------------------------------------------------

INFO = {
    "edit_succ": {"unit": "fraction", "higher_is_better": True, "headline": 0, "edit_success": True},
    "locality": {"unit": "fraction", "higher_is_better": True, "headline": 3, "edit_success": False},
    "fluency": {"unit": "bits", "higher_is_better": True, "headline": 4, "edit_success": False},
}


def result(method, protocol, edit_succ, fluency):
    return {
        "method": method,
        "task": "zsre",
        "mode": "sequential",
        "protocol": protocol,
        "metrics": {"edit_succ": edit_succ, "fluency": fluency},
    }


def test_trend_and_radar_numbers_from_a_summary():
    summary = {
        "metric_info": INFO,
        "results": [
            result("ft-l", "after-10", 0.8, 5.0),
            result("ft-l", "after-2", 0.9, 5.5),
            result("ft-l", "immediate", 1.0, 6.0),
            result("rome", "immediate", 0.5, 3.0),
        ],
    }
    trends = report.trend_numbers([summary])
    assert trends["edit_succ"]["ft-l/zsre"] == [(2, 0.9), (10, 0.8)]
    radar = report.radar_numbers(summary)
    assert radar == {"ft-l": {"edit_succ": 1.0, "fluency": 1.0}, "rome": {"edit_succ": 0.5, "fluency": 0.5}}
    rows = [
        {
            "mode": "single",
            "protocol": "immediate",
            "method": "m",
            "task": "t",
            "case_id": "a",
            "post": {"edit_succ": 0.5},
        },
        {
            "mode": "single",
            "protocol": "immediate",
            "method": "m",
            "task": "t",
            "case_id": "b",
            "post": {"edit_succ": 1.0},
        },
    ]
    assert report.failed_edits(rows, report.edit_success_metrics(summary)) == {
        ("m", "t", "a"): True,
        ("m", "t", "b"): False,
    }


def test_analyze_refuses_a_folder_that_is_no_run(tmp_path):
    done = CliRunner().invoke(cli, ["analyze", str(tmp_path)])
    assert done.exit_code != 0
    assert "is not a run directory" in str(done.exception) and "manifest.json" in str(done.exception)


# -- the whole report of a tiny run, in Chromium -------------------------------------------------

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
]

#: Appended to a copy of the page: once loaded, it writes into the DOM how each image rendered
#: and every error the page raised (the page's own scripts and resources included).
PROBE = """
<script>
window.__errors = [];
window.addEventListener("error", e => window.__errors.push(String(e.message || e.type)), true);
const origError = console.error;
console.error = (...args) => { window.__errors.push(args.join(" ")); origError(...args); };
window.addEventListener("load", () => {
  document.querySelectorAll("img").forEach(img => {
    img.dataset.rendered = img.complete && img.naturalWidth > 0 ? "yes" : "no";
  });
  const out = document.createElement("pre");
  out.id = "probe-errors";
  out.textContent = JSON.stringify(window.__errors);
  document.body.appendChild(out);
});
</script>
"""


class Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict] = []
        self.errors = ""
        self._in_errors = False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        self._in_errors = tag == "pre" and dict(attrs).get("id") == "probe-errors"

    def handle_data(self, data):
        if self._in_errors:
            self.errors += data


def chromium(tmp_path: Path, page: Path, *args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed: `apt-get install -y chromium` (.ci/run does it)")
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    command = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def check_in_chromium(tmp_path: Path, report_html: Path, figures: set[str]) -> None:
    """Every figure of the page rendered, nothing fetched, no error in the console."""
    text = report_html.read_text()
    assert "http://" not in text and "https://" not in text  # nothing to fetch
    probed = tmp_path / "probed.html"
    probed.write_text(text.replace("</body>", PROBE + "</body>"))
    done = chromium(
        tmp_path, probed, "--virtual-time-budget=5000", "--enable-logging=stderr", "--v=0", "--dump-dom"
    )
    parser = Images()
    parser.feed(done.stdout)
    assert json.loads(parser.errors) == []
    assert "CONSOLE" not in done.stderr  # the page logs nothing, errors least of all
    shown = {img["alt"]: img.get("data-rendered") for img in parser.images}
    assert len(parser.images) == len(figures)
    assert set(shown.values()) == {"yes"}, shown


@pytest.fixture(scope="module")
def tiny_report(tiny_model_dirs, tmp_path_factory):
    """A tiny run of FT-L (weights) and ICE (in context) on two bundled ZsRE cases, analysed with a
    hand-written MQuAKE file and the trends of a tiny sequential FT-L run."""
    root = tmp_path_factory.mktemp("analyze")
    run_dir, sequential, out = root / "run", root / "sequential", root / "report"
    runner = CliRunner()
    common = [
        "run",
        "--model",
        str(tiny_model_dirs["llama"]),
        "--task",
        "mini_zsre",
        "--device",
        "cpu",
        "--no-progress",
    ]
    done = runner.invoke(cli, [*common, "--method", "ft-l,ice", "--limit", "2", "--out", str(run_dir)])
    assert done.exit_code == 0, done.output
    args = [
        "--method",
        "ft-l",
        "--limit",
        "3",
        "--mode",
        "sequential",
        "--eval-at",
        "1,2",
        "--out",
        str(sequential),
    ]
    done = runner.invoke(cli, [*common, *args])
    assert done.exit_code == 0, done.output
    mquake = root / "mquake.json"
    mquake.write_text(json.dumps(mquake_records()))
    args = [
        "analyze",
        str(run_dir),
        "--out",
        str(out),
        "--mquake",
        str(mquake),
        "--samples",
        "2",
        "--device",
        "cpu",
    ]
    done = runner.invoke(cli, [*args, "--trends-from", str(sequential)])
    assert done.exit_code == 0, done.output
    return out


def test_the_report_of_a_tiny_run_has_every_section_and_its_numbers(tiny_report):
    numbers = json.loads((tiny_report / "report.json").read_text())
    assert numbers["edits_replayed"] == 4
    assert set(numbers["taxonomy"]) == {"ft-l", "ice"}
    assert set(numbers["weights"]) == {"ft-l"}  # ICE changes no weight
    assert set(numbers["vocabulary"]["ft-l"]["hits"]) == {"before@10", "after@10", "before@50", "after@50"}
    assert len(numbers["case_study"]) == 2 and set(numbers["case_study"][0]["generations"]) == {"ft-l", "ice"}
    assert numbers["locating"]["k"][-1] == len(numbers["locating"]["related"])
    assert numbers["locating"]["related"][-1] == 1.0  # all layers: the same set
    page = (tiny_report / "report.html").read_text()
    for anchor in ("taxonomy", "cases", "weights", "vocabulary", "locating", "trends"):
        assert f'id="{anchor}"' in page
    for name in (
        "weight-sparsity",
        "weight-top-share",
        "weight-norm",
        "vocab-hits",
        "locating-trace",
        "radar",
    ):
        assert (tiny_report / "figures" / f"{name}.png").stat().st_size > 0
        assert (tiny_report / "figures" / f"{name}.svg").stat().st_size > 0


def test_the_report_renders_in_chromium_without_errors(tiny_report, tmp_path):
    figures = {p.stem for p in (tiny_report / "figures").glob("*.png")}
    check_in_chromium(tmp_path, tiny_report / "report.html", figures)
