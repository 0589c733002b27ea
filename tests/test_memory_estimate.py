"""The plan-time memory estimate of a job (harness.runs.memory): exact weights from the model's
config, method state that grows with the layers a method edits and the batch it edits, no state
for a method that edits through the context, the refusal of a job that fits on no device, and
`harness run --dry-run` showing it. Tiny model; nothing is loaded by the estimate."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from test_runs_plugin import registry

from harness.api import HarnessError
from harness.cli import cli
from harness.models.shape import weightless_handle
from harness.plugins import get_registry
from harness.runs.catalog import Catalog
from harness.runs.memory import (
    MemoryEstimate,
    dtype_bytes_for,
    estimate_job,
    estimate_jobs,
    refuse_unplaceable,
)
from harness.runs.plan import Job


@pytest.fixture(scope="module")
def model(tiny_model_dirs) -> str:
    return str(tiny_model_dirs["llama"])


@pytest.fixture(scope="module")
def skeleton(model):
    return weightless_handle(model, model)


def job(model: str, method: str, **fields) -> Job:
    return Job(model=model, method=method, tasks=("facts",), mode=fields.pop("mode", "single"), **fields)


def test_weights_are_every_parameter_once_in_the_load_dtype(model, tiny_llama):
    catalog = Catalog(registry())
    params = sum(p.numel() for p in tiny_llama.model.parameters())  # the tied head counts once
    for dtype_bytes in (4, 2):
        (estimate,) = estimate_jobs([job(model, "noop")], catalog, dtype_bytes).values()
        assert estimate.weights == params * dtype_bytes


def test_method_state_follows_the_layers_edited_and_the_batch(model, skeleton):
    catalog = Catalog(get_registry())
    one = estimate_job(job(model, "ft-l", overrides={"layers": [1]}), skeleton, catalog, 4)
    two = estimate_job(job(model, "ft-l", overrides={"layers": [1, 2]}), skeleton, catalog, 4)
    assert one.state > 0 and two.state == 2 * one.state  # the tiny model's layers are alike
    assert one.weights == two.weights
    single = estimate_job(job(model, "ft-l", overrides={"layers": [1]}), skeleton, catalog, 4)
    batch = estimate_job(
        job(model, "ft-l", overrides={"layers": [1]}, mode="batch", batch_size=512), skeleton, catalog, 4
    )
    assert batch.activations > single.activations  # 512 cases' backward pass outgrows evaluation


def test_a_method_that_edits_through_the_context_keeps_no_state(model, skeleton):
    catalog = Catalog(registry())
    noop = estimate_job(job(model, "noop"), skeleton, catalog, 4)
    nudge = estimate_job(job(model, "nudge"), skeleton, catalog, 4)
    assert noop.state == 0 and noop.activations > 0
    assert nudge.state > 0  # it edits weights and names no layers: every layer counts


def test_a_job_that_fits_on_no_device_is_refused_naming_it():
    small = MemoryEstimate(weights=2**30, state=0, activations=0)
    big = MemoryEstimate(weights=40 * 2**30, state=2**30, activations=2**30)
    refuse_unplaceable({"a": small, "b": None}, [2 * 2**30, 16 * 2**30], "GPU")
    with pytest.raises(
        HarnessError, match=r"1 job\(s\) fit on no device: the largest GPU holds 16\.0 GiB.*b: ~42\.0"
    ):
        refuse_unplaceable({"a": small, "b": big}, [16 * 2**30], "GPU")


def test_the_load_dtype_follows_the_device():
    assert dtype_bytes_for("cpu") == 4
    assert dtype_bytes_for("cuda:1") == 2
    assert dtype_bytes_for("cpu", gpus_per_job=1) == 2


def test_dry_run_shows_each_job_s_estimate(model):
    result = CliRunner().invoke(
        cli,
        ["run", "--model", model, "--method", "ft-l,ice", "--task", "zsre", "--device", "cpu", "--dry-run"],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    ft = next(line for line in lines if "/ft-l/zsre/single" in line)
    ice = next(line for line in lines if "/ice/zsre/single" in line)
    assert "weights" in ft and "method state 0.0 MiB" in ice and "method state 0.0 MiB" not in ft
