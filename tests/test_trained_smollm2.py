"""The trained editors on the real SmolLM2-135M, trained on the real KnowEdit WikiData
counterfact train split and editing real ZsRE test records (cross-domain).

Small on purpose (CI budget): a short training and a few edits; the measurements with the default
budgets (10 records per task, in-domain and cross-domain, trained against untrained) are in
benchmarks/trained_editors.md. The trained editors land in $HARNESS_HOME, so a second session
reads them instead of training again.
"""

from __future__ import annotations

import pytest
import torch
from methods_helpers import mean_scores, zsre_cases
from shared_data import KNOWEDIT

from harness.hparams import resolve_hparams
from harness.testing import resolve_task
from harness_plugins.methods.mend import MEND
from harness_plugins.methods.serac import SERAC

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def train_cases():
    if not KNOWEDIT.is_dir():
        pytest.skip(f"no KnowEdit data at {KNOWEDIT}")
    return resolve_task("wiki_counterfact").load(split="train", data_dir=str(KNOWEDIT)).cases


def test_serac_trained_across_domains_copies_edits_and_leaves_unrelated_facts(smollm2, train_cases):
    trained, untrained = SERAC(), SERAC()
    hparams = resolve_hparams(trained, smollm2, {"steps": 30})
    trained.fit(smollm2, train_cases, hparams)
    untrained.fit(smollm2, train_cases, {**hparams, "steps": 0})
    held_out = zsre_cases(8, start=10)

    def h_loss(method):  # the counterfactual model's NLL of ZsRE targets after their edit's line
        with torch.no_grad():
            return float(method.editor.counterfactual_loss(held_out, torch.Generator().manual_seed(0)))

    assert h_loss(trained) < 0.8 * h_loss(untrained), (h_loss(trained), h_loss(untrained))
    scores = mean_scores(smollm2, trained, zsre_cases(4, unrelated=True), hparams, mode="single")
    print("serac trained on wiki_counterfact, on ZsRE:", scores)
    assert scores["edit_succ"] >= 0.9 and scores["locality.unrelated"] >= 0.9


def test_mend_trained_across_domains_edits_where_the_untrained_editor_barely_does(smollm2, train_cases):
    trained, untrained = MEND(), MEND()
    hparams = resolve_hparams(trained, smollm2, {"steps": 40})
    trained.fit(smollm2, train_cases, hparams)
    untrained.fit(smollm2, train_cases, {**hparams, "steps": 0})
    cases = zsre_cases(4, unrelated=True)
    after = mean_scores(smollm2, trained, cases, hparams, mode="single")
    before = mean_scores(smollm2, untrained, cases, {**hparams, "steps": 0}, mode="single")
    print("mend trained on wiki_counterfact, on ZsRE:", after, "untrained:", before)
    assert after["edit_succ"] >= before["edit_succ"] + 0.3, (after, before)
    assert after["locality.unrelated"] >= 0.8
