"""IKE and ICE: the context is the study's format, demonstrations come from the nearest train facts,
their embeddings are cached, and the model is never touched."""

from __future__ import annotations

import pytest
import torch
from methods_helpers import digests, mean_scores, zsre_cases

from harness.api import EditCase, HarnessError, Probe
from harness.cache import cache_dir
from harness.hparams import resolve_hparams
from harness.models.handle import ModelHandle
from harness_plugins.methods.ike import ICE, IKE, train_demonstrations
from harness_plugins.methods.ike_retrieval import BUNDLED, DemoIndex, SentenceEncoder

EDIT = EditCase(case_id="e", prompt="The capital of France is", target_new="Rome")


def fact(i: int, prompt: str, target: str) -> EditCase:
    return EditCase(
        case_id=f"t{i}",
        prompt=prompt,
        target_new=target,
        rephrases=(f"In other words, {prompt.lower()}",),
        locality={"relation_specificity": (Probe(prompt="The sky is", answers=("blue", "azure")),)},
    )


TRAIN = [
    fact(0, "The capital of Spain is", "Lisbon"),
    fact(1, "The chemical symbol of gold is", "Ag"),
    fact(2, "The author of Hamlet is", "Goethe"),
    fact(3, "The largest planet is", "Mars"),
]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path))


def test_ice_context_is_the_new_fact_prefix(tiny_llama: ModelHandle) -> None:
    edit = ICE().apply(tiny_llama, [EDIT], {})
    assert edit.context == "New Fact: The capital of France is Rome\nPrompt: "
    with pytest.raises(HarnessError, match="one case per apply"):
        ICE().apply(tiny_llama, [EDIT, EDIT], {})


def test_train_demonstrations_are_copy_update_and_retain() -> None:
    copy, update, retain = train_demonstrations(TRAIN[:1])
    fact_text = "New Fact: The capital of Spain is Lisbon\nPrompt: "
    assert copy == fact_text + "The capital of Spain is Lisbon\n\n"
    assert update == fact_text + "In other words, the capital of spain is Lisbon\n\n"
    assert retain == fact_text + "The sky is blue\n\n"


def test_ike_retrieves_the_nearest_facts_and_leaves_the_model_alone(tiny_llama: ModelHandle) -> None:
    method, weights = IKE(), digests(tiny_llama)
    with pytest.raises(HarnessError, match="call fit"):
        method.apply(tiny_llama, [EDIT], resolve_hparams(method, tiny_llama, {}))
    method.fit(tiny_llama, TRAIN, resolve_hparams(method, tiny_llama, {}))
    edit = method.apply(tiny_llama, [EDIT], resolve_hparams(method, tiny_llama, {"k": 3}))
    demos = edit.context.split("\n\n")
    assert len(demos) == 5  # 3 retrieved, the edit's own copy, then the prefix awaiting the probe
    assert all("capital of Spain" in d for d in demos[:3])  # Spain's three demonstrations are nearest
    assert demos[3] == "New Fact: The capital of France is Rome\nPrompt: The capital of France is Rome"
    assert demos[4] == "New Fact: The capital of France is Rome\nPrompt: "
    everything = method.apply(tiny_llama, [EDIT], resolve_hparams(method, tiny_llama, {}))
    assert everything.context.count("New Fact:") == 3 * len(TRAIN) + 2  # k=16 > 12 stored: all of them
    edit.undo()
    assert digests(tiny_llama) == weights


def test_embeddings_are_computed_once_and_read_back_from_disk() -> None:
    encoder = SentenceEncoder(BUNDLED, torch.device("cpu"))
    sentences = train_demonstrations(TRAIN)
    first = DemoIndex.build(sentences, encoder)
    assert torch.allclose(first.embeddings.norm(dim=-1), torch.ones(len(sentences)))
    (path,) = cache_dir("ike").glob("*.pt")
    torch.save(torch.zeros_like(first.embeddings), path)  # a changed file proves the cache is read
    assert torch.equal(DemoIndex.build(sentences, encoder).embeddings, torch.zeros_like(first.embeddings))
    DemoIndex.build(sentences[:-1], encoder)  # other sentences: another entry
    assert len(list(cache_dir("ike").glob("*.pt"))) == 2


def test_an_unknown_sentence_model_is_a_clear_error(tiny_llama: ModelHandle) -> None:
    hparams = resolve_hparams(IKE(), tiny_llama, {"sentence_model": "/no/such/encoder"})
    with pytest.raises(HarnessError, match="/no/such/encoder"):
        IKE().fit(tiny_llama, TRAIN, hparams)


@pytest.mark.slow
def test_ike_and_ice_on_smollm2_with_real_zsre(smollm2: ModelHandle) -> None:
    """Train split: 200 other ZsRE test records (KnowEdit's ZsRE has no train file).

    Measured (2-core CPU, torch 2.13): IKE edit 0.99, generalization 0.94, locality 0.25; ICE 0.84,
    0.77, 0.35; unedited edit success 0.25. In-context edits cost locality: every probe is read
    after the demonstrations (the study reports 23.1 for ICE on ZsRE with Llama-2-7B-chat). A
    context that is lost scores the unedited 0.25; retrieval that finds nothing useful does not
    beat ICE."""
    cases = zsre_cases(20)
    ike = IKE()
    ike.fit(smollm2, zsre_cases(200, start=100), resolve_hparams(ike, smollm2, {}))
    ike_scores = mean_scores(smollm2, ike, cases, resolve_hparams(ike, smollm2, {}), mode="single")
    ice_scores = mean_scores(smollm2, ICE(), cases, {}, mode="single")
    print("ike", ike_scores, "ice", ice_scores)
    assert ike_scores["edit_succ"] >= 0.9 and ike_scores["generalization"] >= 0.8
    assert ice_scores["edit_succ"] >= 0.7 and ice_scores["generalization"] >= 0.6
    assert ike_scores["edit_succ"] > ice_scores["edit_succ"]
    assert ike_scores["locality"] >= 0.15 and ice_scores["locality"] >= 0.15
