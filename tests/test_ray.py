"""`--executor ray` on a local Ray cluster of two CPU workers (started once for the module): the
rows of cases.jsonl are the local executor's (timing aside) in single, batch and sequential mode;
a worker killed outright (SIGKILL of its own process, mid-job) and a driver killed outright and
resumed both end with every case exactly once; a job that fits on no worker is refused before the
run directory exists. Tiny model; the run tests' plugin (test_runs_plugin), plus `dies`, its
`nudge` that kills its worker once when armed.

Also run as a script by the driver-kill test: `python tests/test_ray.py OUT MODEL ADDRESS`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from test_runs_plugin import Nudge, Plugin  # noqa: E402  (after the skip when ray is missing)

from harness import hookimpl  # noqa: E402
from harness.plugins import build_registry  # noqa: E402
from harness.runs.catalog import Catalog  # noqa: E402
from harness.runs.plan import RunConfig  # noqa: E402
from harness.runs.ray_executor import RayOptions  # noqa: E402
from harness.runs.runner import execute  # noqa: E402
from harness.runs.store import RunStore, row_key  # noqa: E402

TESTS = Path(__file__).resolve().parent
#: The file whose presence arms `dies`; set for the workers when the cluster starts.
ARMED = "HARNESS_TEST_DIES_ARMED"


class Dies(Nudge):
    """`nudge`, except that when the file named by $HARNESS_TEST_DIES_ARMED exists, the worker
    that edits case f-3 removes it and kills its own process with SIGKILL (so once per arming)."""

    name = "dies"
    die_at = "f-3"

    def apply(self, handle, cases, hparams):
        armed = os.environ.get(ARMED)
        if armed and self.die_at in {c.case_id for c in cases}:
            try:
                os.remove(armed)
            except FileNotFoundError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().apply(handle, cases, hparams)


class DiesPlugin:
    @hookimpl
    def harness_register_methods(self, register):
        register(Dies.name, Dies)


def plugin_catalog() -> Catalog:
    """The catalog of the driver and of every worker: the run tests' plugin and `dies`."""
    return Catalog(build_registry(extra_plugins=[("runs-test", Plugin()), ("ray-test", DiesPlugin())]))


def options() -> RayOptions:
    return RayOptions(workers=2, catalog_factory=plugin_catalog)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local cluster of two CPUs whose workers import this folder's modules; yields the path
    that arms `dies`."""
    armed = tmp_path_factory.mktemp("ray") / "armed"
    ray.init(
        address="local",  # a cluster of its own, even where `ray start` runs one on this machine
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(TESTS), ARMED: str(armed)}},
    )
    yield armed
    ray.shutdown()


@pytest.fixture
def model(tiny_model_dirs) -> str:
    return str(tiny_model_dirs["llama"])


def rows(out: Path) -> dict[tuple, dict]:
    """cases.jsonl by row key, without timing; fails on a row written twice."""
    found = [row for row in RunStore(out).rows()]
    keyed = {row_key(row): {k: v for k, v in row.items() if k != "timing"} for row in found}
    assert len(keyed) == len(found), "a row was written twice"
    return keyed


def both(config: RunConfig, tmp_path: Path, **ray_kwargs) -> tuple[dict, dict]:
    """The rows of a local run and of a Ray run of `config`."""
    local, distributed = tmp_path / "local", tmp_path / "ray"
    execute(config, local, device="cpu", catalog=plugin_catalog(), progress=False)
    execute(
        config,
        distributed,
        device="cpu",
        catalog=plugin_catalog(),
        progress=False,
        cluster=options(),
        **ray_kwargs,
    )
    return rows(local), rows(distributed)


CONFIGS = {
    "single": RunConfig(methods=("nudge",), tasks=("facts",)),
    "batch": RunConfig(methods=("nudge",), tasks=("facts", "other_facts"), mode="batch", batch_size=2),
    "sequential": RunConfig(
        methods=("nudge",), tasks=("facts", "other_facts"), mode="sequential", eval_at=(2,)
    ),
}


@pytest.mark.parametrize(
    "mode",
    [
        "single",
        pytest.param("batch", marks=pytest.mark.slow),
        pytest.param("sequential", marks=pytest.mark.slow),
    ],
)
def test_ray_rows_equal_the_local_executors(cluster, model, tmp_path, mode):
    config = RunConfig(**{**CONFIGS[mode].__dict__, "model": model})
    local, distributed = both(config, tmp_path)
    assert distributed == local
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    assert all("finished" in job for job in manifest["jobs"].values())
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert summary["results"] == json.loads((tmp_path / "local" / "summary.json").read_text())["results"]


@pytest.mark.parametrize(
    "fields",
    [{"mode": "sequential", "eval_at": (2,)}, pytest.param({"mode": "single"}, marks=pytest.mark.slow)],
    ids=["sequential", "single"],
)
def test_a_killed_worker_s_cases_are_rescheduled_each_once(cluster, model, tmp_path, fields):
    """`dies` kills its worker at case f-3: a new worker takes the unit again (sequential: replays
    the saved edits, then scores the rest; single: the shard's unscored cases); every row is there
    once, equal to an undisturbed run's."""
    config = RunConfig(model=model, methods=("dies",), tasks=("facts",), **fields)
    cluster.touch()
    warnings: list[str] = []
    local, distributed = both(config, tmp_path, warn=warnings.append)
    assert not cluster.exists(), "the worker never reached the case that kills it"
    assert any("died running" in w for w in warnings), warnings
    assert distributed == local


@pytest.mark.slow
def test_a_killed_driver_resumes_with_each_case_once(cluster, model, tmp_path):
    out = tmp_path / "ray"
    address = ray.get_runtime_context().gcs_address
    driver = subprocess.Popen([sys.executable, __file__, str(out), model, address])
    deadline = time.monotonic() + 300
    while not (out / "cases.jsonl").exists() or len(list(RunStore(out).rows())) < 2:
        assert driver.poll() is None, "the driver ended before it could be killed"
        assert time.monotonic() < deadline, "no rows within 300 s"
        time.sleep(0.2)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    saved = len(list(RunStore(out).rows()))
    assert saved < 6, "the run finished before the kill"
    execute(
        RunConfig(),
        out,
        resume=True,
        device="cpu",
        catalog=plugin_catalog(),
        progress=False,
        cluster=options(),
    )
    reference = tmp_path / "local"
    execute(driver_config(model), reference, device="cpu", catalog=plugin_catalog(), progress=False)
    assert rows(out) == rows(reference)


def test_a_job_that_fits_on_no_worker_is_refused_before_the_run_starts(cluster, tmp_path):
    """A 70B-parameter llama config (no weights: nothing loads) needs far more than a worker has."""
    folder = tmp_path / "huge"
    folder.mkdir()
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 8192,
        "intermediate_size": 28672,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "vocab_size": 32000,
    }
    (folder / "config.json").write_text(json.dumps(config))
    request = RunConfig(model=str(folder), methods=("nudge",), tasks=("facts",))
    with pytest.raises(Exception, match=r"fit on no device: .*nudge/facts/single: ~\d+\.\d GiB \(weights"):
        execute(
            request, tmp_path / "r", device="cpu", catalog=plugin_catalog(), progress=False, cluster=options()
        )
    assert not (tmp_path / "r").exists()


def driver_config(model: str) -> RunConfig:
    """The killed driver's run: single mode, slowed so that the kill lands mid-run."""
    return RunConfig(model=model, methods=("nudge",), tasks=("facts",), overrides={"delay": 1.0})


if __name__ == "__main__":
    out, model_dir, address = sys.argv[1:4]
    ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(TESTS)}})
    execute(
        driver_config(model_dir),
        out,
        device="cpu",
        catalog=plugin_catalog(),
        progress=False,
        cluster=options(),
    )
