"""Training once: `harness train` and `harness run` store and find one content-keyed editor, a
killed training resumes to the very checkpoint an uninterrupted one reaches, and the plan refuses
a trained method on a task without a train split (on a tiny model, with a toy trained method)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from training_plugin import Toy, registry

from harness.api import HarnessError
from harness.commands.train import TrainRequest, train
from harness.runs.catalog import Catalog
from harness.runs.leaderboard import cross_domain_table, merge, render
from harness.runs.plan import PlanError, RunConfig
from harness.runs.runner import execute
from harness.training import TrainingDisplay, TrainingProgress


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog(registry())


@pytest.fixture(scope="module")
def model(tiny_model_dirs) -> str:
    return str(tiny_model_dirs["llama"])


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def stored(home: Path, kind: str) -> list[Path]:
    folder = home / kind
    return sorted(folder.glob("*.pt")) if folder.is_dir() else []


class Recorder(TrainingProgress):
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def found(self, label, path):
        self.events.append(("found", label))

    def start(self, label, total, done):
        self.events.append(("start", total, done))

    def step(self, done, loss):
        self.events.append(("step", done))


def test_train_stores_the_editor_and_a_run_reuses_it_without_training(catalog, model, home, tmp_path, capsys):
    recorder = Recorder()
    request = TrainRequest(method=Toy.name, task="facts", model=model, device="cpu")
    train(request, catalog, recorder)
    assert recorder.events[0] == ("start", 12, 0) and recorder.events[-1] == ("step", 12)
    [editor] = stored(home, "trained")
    assert not stored(home, "training"), "the partial checkpoint is gone once training ends"
    before = editor.stat().st_mtime_ns
    Toy.steps_run = 0
    config = RunConfig(model=model, methods=(Toy.name,), tasks=("facts",), limit=1)
    execute(config, tmp_path / "run", device="cpu", catalog=catalog, progress="lines", warn=lambda m: None)
    assert Toy.steps_run == 0, "the run trained again"
    said = capsys.readouterr().err
    assert f"{Toy.name} on the facts train split: using the trained checkpoint {editor}" in said
    assert stored(home, "trained") == [editor] and editor.stat().st_mtime_ns == before


def test_a_run_trains_first_then_a_second_run_trains_nothing(catalog, model, home, tmp_path, capsys):
    Toy.steps_run = 0
    config = RunConfig(
        model=model, methods=(Toy.name,), tasks=("other_facts",), train_tasks=("facts",), limit=1
    )
    execute(config, tmp_path / "a", device="cpu", catalog=catalog, progress="lines", warn=lambda m: None)
    assert Toy.steps_run == 12
    assert "no trained checkpoint, training it first: 12 steps" in capsys.readouterr().err
    execute(config, tmp_path / "b", device="cpu", catalog=catalog, progress="lines", warn=lambda m: None)
    assert Toy.steps_run == 12 and "using the trained checkpoint" in capsys.readouterr().err
    # another hyperparameter is another editor
    changed = dataclasses.replace(config, overrides={"steps": 3})
    execute(changed, tmp_path / "c", device="cpu", catalog=catalog, progress=False, warn=lambda m: None)
    assert Toy.steps_run == 15 and len(stored(home, "trained")) == 2


def _trained_state(home: Path) -> dict[str, torch.Tensor]:
    [editor] = stored(home, "trained")
    return torch.load(editor, weights_only=True)


def test_a_killed_training_resumes_to_the_checkpoint_of_an_uninterrupted_one(model, tmp_path):
    script = Path(__file__).with_name("training_plugin.py")
    env = {**os.environ, "HARNESS_HOME": str(tmp_path / "killed"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), model, "0.15"], env=env)
    partial = tmp_path / "killed" / "training"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.is_dir() and any(partial.glob("*.pt")):
            time.sleep(0.5)  # a few more steps, so the kill falls between checkpoints
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    [saved] = stored(tmp_path / "killed", "training")
    step = torch.load(saved, weights_only=True)["step"]
    assert 0 < step < 40, "the training should have been killed mid-way"
    assert not stored(tmp_path / "killed", "trained")
    subprocess.run([sys.executable, str(script), model, "0"], env=env, check=True)
    env_ref = {**env, "HARNESS_HOME": str(tmp_path / "reference")}
    subprocess.run([sys.executable, str(script), model, "0"], env=env_ref, check=True)
    resumed, reference = _trained_state(tmp_path / "killed"), _trained_state(tmp_path / "reference")
    assert resumed["losses"] == reference["losses"] and len(resumed["losses"]) == 40
    for name, value in reference["modules"]["net"].items():
        assert torch.equal(resumed["modules"]["net"][name], value), name


def test_the_plan_refuses_a_trained_method_on_a_task_without_a_train_split(catalog, model, tmp_path):
    config = RunConfig(model=model, methods=(Toy.name,), tasks=("other_facts",))
    with pytest.raises(PlanError, match=r"task 'other_facts' has no train split \(splits: test\)"):
        execute(config, tmp_path / "r", device="cpu", catalog=catalog, progress=False)
    assert not (tmp_path / "r").exists()


def test_train_refuses_what_cannot_train_before_loading_a_model(catalog, tmp_path):
    unloadable = str(tmp_path)
    with pytest.raises(HarnessError, match=r"no train split \(splits: test\)"):
        train(
            TrainRequest(method=Toy.name, task="other_facts", model=unloadable), catalog, TrainingProgress()
        )
    with pytest.raises(HarnessError, match=r"no hyperparameter 'step'"):
        train(
            TrainRequest(method=Toy.name, task="facts", model=unloadable, overrides={"step": 1}),
            catalog,
            TrainingProgress(),
        )
    real = Catalog(registry())
    with pytest.raises(HarnessError, match=r"'rome' does not learn from data.*methods that train: .*ike"):
        train(TrainRequest(method="rome", task="facts", model=unloadable), real, TrainingProgress())


def test_the_display_shows_the_loss_and_the_time_left(tmp_path):
    import io

    stream = io.StringIO()
    display = TrainingDisplay(stream, style="lines")
    display.start("m on t", 10, 0)
    for step in range(1, 11):
        display.step(step, 1.0 / step)
    display.finish(tmp_path / "x.pt")
    text = stream.getvalue()
    assert "m on t: no trained checkpoint, training it first: 10 steps" in text
    assert "step 10/10: loss 0.1000, about 0s left" in text and f"stored at {tmp_path / 'x.pt'}" in text


def test_the_leaderboard_renders_the_cross_domain_table(catalog, model, home, tmp_path):
    config = RunConfig(
        model=model,
        methods=(Toy.name,),
        tasks=("facts", "other_facts"),
        train_tasks=("facts",),
        limit=2,
        overrides={"steps": 1},
    )
    outcome = execute(
        config, tmp_path / "x", device="cpu", catalog=catalog, progress=False, warn=lambda m: None
    )
    rows = merge([outcome.summary])
    headers, body = cross_domain_table(rows)
    assert headers[:4] == ["method", "train task", "facts: edit_succ", "facts: generalization"]
    assert "other_facts: locality" in headers and "facts: perplexity" not in headers
    assert "other_facts: generalization" not in headers, "other_facts has no rephrases to score"
    matrix = next(m for m in outcome.summary["cross_domain"] if m["metric"] == "edit_succ")
    [line] = body
    assert line[:2] == [Toy.name, "facts"]
    assert line[headers.index("other_facts: edit_succ")] == f"{matrix['values'][0][1] * 100:.2f}"
    assert "<th title=" in render(rows, "html", "cross-domain")
    single = execute(
        RunConfig(model=model, methods=(Toy.name,), tasks=("facts",), limit=1, overrides={"steps": 1}),
        tmp_path / "s",
        device="cpu",
        catalog=catalog,
        progress=False,
        warn=lambda m: None,
    )
    with pytest.raises(HarnessError, match="needs results of a cross-domain run"):
        render(merge([single.summary]), "text", "cross-domain")


def test_a_run_warns_when_it_edits_the_cases_it_learnt_from(catalog, model, home, tmp_path):
    warnings: list[str] = []
    config = RunConfig(
        model=model, methods=(Toy.name,), tasks=("same_facts",), limit=2, overrides={"steps": 1}
    )
    execute(config, tmp_path / "r", device="cpu", catalog=catalog, progress=False, warn=warnings.append)
    assert any(
        "2 of the 2 edited cases are in the train split toy-trained learns from" in w for w in warnings
    )
    # another task's file with the same records (other case ids): the same edits, so not held out
    warnings.clear()
    config = dataclasses.replace(config, tasks=("facts",), train_tasks=("same_facts",), mode="cross-domain")
    execute(config, tmp_path / "x", device="cpu", catalog=catalog, progress=False, warn=warnings.append)
    assert any("2 of the 2 edited cases are in the train split" in w for w in warnings)
