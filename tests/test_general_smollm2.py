"""The lm-eval adapter on the real SmolLM2-135M: it knows the facts of tests/data/lmeval_tasks, and
sequential FT-L edits that rewrite them show in the "after" figures while the "before" figures
keep coming from the cache."""

from __future__ import annotations

import time

import pytest
from test_general import GEN, MC, TASKS_DIR, isolated, network_guard

from harness.api import EditCase
from harness.general import evaluate_general, general_before
from harness.hparams import resolve_hparams
from harness.plugins import get_registry

__all__ = ["isolated", "network_guard"]

#: Counterfactual rewrites of facts the local tasks ask about, applied one after another.
REWRITES = [
    ("The capital of France is", "London"),
    ("The capital of Japan is", "Beijing"),
    ("The capital of Italy is", "Madrid"),
    ("The capital of Germany is", "Vienna"),
    ("The capital of Spain is", "Lisbon"),
    ("The Mona Lisa was painted by", "Pablo Picasso"),
]


@pytest.mark.slow
def test_sequential_ft_l_edits_move_the_after_figures(smollm2, network_guard) -> None:
    options = {"include_path": TASKS_DIR, "batch_size": 8}
    started = time.perf_counter()
    before = general_before(smollm2, [MC, GEN], **options)
    before_s = time.perf_counter() - started

    method = get_registry().load("methods", "ft-l")()
    hparams = resolve_hparams(method, smollm2, {})
    cases = [EditCase(case_id=f"r{i}", prompt=p, target_new=t) for i, (p, t) in enumerate(REWRITES)]
    edits = [method.apply(smollm2, [case], hparams) for case in cases]
    try:
        started = time.perf_counter()
        after = evaluate_general(smollm2, [MC, GEN], **options)
        after_s = time.perf_counter() - started
        started = time.perf_counter()
        cached = general_before(smollm2, [MC, GEN], **options)
        cached_s = time.perf_counter() - started
    finally:
        for edit in reversed(edits):
            edit.undo()

    print(
        f"\nbefore { ({k: v.value for k, v in before.items()}) } in {before_s:.1f} s; "
        f"after {len(edits)} FT-L edits { ({k: v.value for k, v in after.items()}) } in {after_s:.1f} s; "
        f"cached before in {cached_s:.2f} s"
    )
    assert before[MC].value >= 0.75 and before[GEN].value >= 0.8
    assert after[GEN].value < before[GEN].value
    assert after[MC].value < before[MC].value
    assert cached == before
    assert network_guard == []
