"""The run store's typed manifest calls, and the summary computed from rows and planned jobs."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.api import HarnessError
from harness.runs.plan import Job
from harness.runs.runner import write_summary
from harness.runs.store import RunStore
from harness.runs.summary import mean_scores
from harness.schemas import validate_document

SEQUENTIAL = Job(model="m", method="nudge", tasks=("facts",), mode="sequential", overrides={"scale": 0.1})
BATCH = Job(model="m", method="nudge", tasks=("facts",), mode="batch", batch_size=2)


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def fake_handle() -> SimpleNamespace:
    return SimpleNamespace(
        fingerprint=lambda: "f" * 64,
        source="a test folder",
        device="cpu",
        dtype="torch.float32",
        adapter=SimpleNamespace(family="llama"),
    )


def start(out: Path, *, resume: bool = False) -> RunStore:
    store = RunStore(out)
    store.record_start(
        {"methods": ["nudge"]}, 3, resume=resume, versions={"harness": "0"}, machine={"cpus": 2}
    )
    return store


def test_each_record_call_is_on_disk_at_once_in_the_manifest_layout(tmp_path: Path):
    out = tmp_path / "run"
    store = start(out)
    first = manifest(out)
    assert first["status"] == "running" and first["config"] == {"methods": ["nudge"]} and first["seed"] == 3
    assert first["jobs"] == {} and "ended" not in first

    store.record_job(SEQUENTIAL, n_cases=4)
    assert manifest(out)["jobs"][SEQUENTIAL.key] == {
        "key": "m/nudge/facts/sequential",
        "model": "m",
        "method": "nudge",
        "tasks": ["facts"],
        "mode": "sequential",
        "batch_size": 1,
        "eval_at": [],
        "train_task": None,
        "overrides": {"scale": 0.1},
        "n_cases": 4,
    }
    store.record_model("m", fake_handle(), load_s=1.23456)
    assert manifest(out)["models"]["m"] == {
        "fingerprint": "f" * 64,
        "source": "a test folder",
        "device": "cpu",
        "dtype": "float32",
        "family": "llama",
        "load_s": 1.235,
    }
    store.record_evaluation("facts", {"protocol": 2})
    store.record_job_started(SEQUENTIAL, {"scale": 0.1, "delay": 0})
    store.record_general(SEQUENTIAL, {"mc": {"metric": "acc", "before": 0.5, "after": 0.25}})
    store.record_job_finished(SEQUENTIAL)
    written = manifest(out)
    job = written["jobs"][SEQUENTIAL.key]
    assert job["hparams"] == {"scale": 0.1, "delay": 0} and job["started"] <= job["finished"]
    assert written["evaluation"] == {"facts": {"protocol": 2}}
    figures = {"mc": {"metric": "acc", "before": 0.5, "after": 0.25}}
    assert store.general_records() == written["general"] == {SEQUENTIAL.key: figures}
    store.record_end("finished")
    assert manifest(out)["status"] == "finished" and manifest(out)["ended"] >= first["started"]


def test_resuming_keeps_the_first_session_and_notes_the_new_one(tmp_path: Path):
    out = tmp_path / "run"
    store = start(out)
    store.record_job(SEQUENTIAL, n_cases=4)
    store.record_job_started(SEQUENTIAL, {"scale": 0.1})
    store.record_end("interrupted")
    started = manifest(out)["jobs"][SEQUENTIAL.key]["started"]

    resumed = RunStore(out)
    resumed.record_start({"ignored": True}, 9, resume=True, versions={}, machine={})
    again = manifest(out)
    assert again["config"] == {"methods": ["nudge"]} and again["seed"] == 3
    assert again["status"] == "running" and "ended" not in again and len(again["resumed"]) == 1
    resumed.record_job(SEQUENTIAL, n_cases=4)
    resumed.record_job_started(SEQUENTIAL, {"scale": 0.1})
    assert manifest(out)["jobs"][SEQUENTIAL.key]["started"] == started

    with pytest.raises(HarnessError, match="nothing to resume"):
        RunStore(tmp_path / "empty").record_start({}, 0, resume=True, versions={}, machine={})
    assert not (tmp_path / "empty").exists()


def test_a_failed_end_records_the_error_and_counts_until_the_run_is_resumed(tmp_path: Path):
    out = tmp_path / "run"
    store = start(out)
    assert store.ending() == {}
    error = {"type": "RuntimeError", "message": "CUDA out of memory\nmore detail", "traceback": "..."}
    store.record_end("failed", cases={"saved": 3, "planned": 8}, error=error)
    written = manifest(out)
    assert written["status"] == "failed" and written["error"] == error
    assert written["cases"] == {"saved": 3, "planned": 8}
    assert store.ending() == {
        "status": "failed",
        "cases": {"saved": 3, "planned": 8},
        "error": "RuntimeError: CUDA out of memory",
    }
    with pytest.raises(ValueError, match="not 'running'"):
        store.record_end("running")

    RunStore(out).record_start({}, 0, resume=True, versions={}, machine={})
    assert not {"ended", "cases", "error"} & set(manifest(out))


def test_the_summary_comes_from_the_rows_and_the_planned_jobs(tmp_path: Path):
    store = start(tmp_path / "run")
    for job, protocol, case, score in [
        (SEQUENTIAL, "after-2", "a", 0.0),
        (SEQUENTIAL, "immediate", "a", 1.0),
        (SEQUENTIAL, "immediate", "b", 0.5),
        (BATCH, "immediate", "a", 0.25),
    ]:
        store.append(
            {
                "case_id": case,
                "job": job.key,
                "model": job.model,
                "method": job.method,
                "task": "facts",
                "mode": job.mode,
                "protocol": protocol,
                "edits": 1,
                "pre": {"edit_succ": 0.0},
                "post": {"edit_succ": score},
                "timing": {"apply_s": 0.1, "eval_s": 0.1},
            }
        )
    store.record_general(BATCH, {"mc": {"metric": "acc", "before": 0.5, "after": 0.25, "edits": 5}})

    summary = write_summary(store, [SEQUENTIAL, BATCH])

    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == summary
    assert validate_document(summary, "results", "summary.json") == []
    got = [(r["job"], r.get("protocol"), r["n_cases"], r["metrics"]["edit_succ"]) for r in summary["results"]]
    assert got == [
        (SEQUENTIAL.key, "immediate", 2, 0.75),
        (SEQUENTIAL.key, "after-2", 1, 0.0),
        (BATCH.key, None, 1, 0.25),
    ]
    assert summary["results"][2]["batch_size"] == 2
    assert summary["results"][2]["general"] == {"mc": {"metric": "acc", "before": 0.5, "after": 0.25}}


def test_summary_means_do_not_depend_on_the_order_of_the_rows():
    # Float addition is not associative: 1e16 + 1 - 1e16 is 0.0 left to right, 1.0 otherwise.
    rows = [{"ppl": 1e16}, {"ppl": 1.0}, {"ppl": -1e16}, {"acc": 0.5}]
    means = [mean_scores(order) for order in (rows, rows[::-1], [rows[0], rows[2], rows[1], rows[3]])]
    assert means[0] == means[1] == means[2] == {"acc": 0.5, "ppl": 1.0 / 3}
