"""The chat template (`harness run --chat-template`, a dataset spec's `chat_template`): the exact
token ids of a probe and of an edit's training target, an in-context edit inside the user turn,
the manifest record, the lm-eval check, and the refusal of a model without a template."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest
from test_general import MC, TASKS_DIR, isolated  # noqa: F401  (isolated: private home, offline)
from test_runs_plugin import Plugin, fact_cases

from harness import hookimpl
from harness.api import (
    AppliedEdit,
    Capabilities,
    EditCase,
    EvalOptions,
    HarnessError,
    LoadedCases,
    Method,
    Task,
    encode_answers,
)
from harness.models.shape import has_chat_template
from harness.plugins import build_registry
from harness.runs.catalog import Catalog
from harness.runs.plan import PlanError, RunConfig
from harness.runs.runner import execute, plan
from harness.runs.store import RunStore
from harness.testing import Evaluator, build_tiny_model, load_model

#: What the tiny models' template makes of a prompt, up to where the assistant's answer starts.
TURN = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text).input_ids


@pytest.fixture
def model_inputs(tiny_handle):
    """Every unpadded row of token ids the model is run on (decoding steps of one token aside)."""
    rows: list[list[int]] = []

    def hook(module, args, kwargs):
        input_ids, mask = kwargs["input_ids"], kwargs.get("attention_mask")
        if mask is not None and mask.shape == input_ids.shape:
            rows.extend(input_ids[b][mask[b].bool()].tolist() for b in range(input_ids.shape[0]))

    handle = tiny_handle.model.register_forward_pre_hook(hook, with_kwargs=True)
    yield rows
    handle.remove()


def test_probes_are_asked_in_the_chat_template(tiny_handle, model_inputs) -> None:
    tok = tiny_handle.tokenizer
    case = EditCase(case_id="c", prompt="The capital of France is ", target_new="Paris")
    options = EvalOptions(use_cache=False, chat_template=True)
    Evaluator(tiny_handle, ["edit_succ", "contains"], options).evaluate_pre([case])
    scored = ids(tok, TURN.format("The capital of France is") + "Paris")
    generated = ids(tok, TURN.format("The capital of France is"))
    assert sorted(model_inputs) == sorted([scored, generated])
    # Before the template's first token, only what the tokenizer adds itself (Llama's BOS): the
    # BOS text a template may start with is never doubled.
    assert scored[: scored.index(tok.convert_tokens_to_ids("<|im_start|>"))] == ids(tok, "")
    assert scored[: len(generated)] == generated and tok.decode(scored[len(generated) :]) == "Paris"


def test_an_in_context_edit_sits_inside_the_user_turn(tiny_handle, model_inputs) -> None:
    tok = tiny_handle.tokenizer
    case = EditCase(case_id="c", prompt="The capital of France is", target_new="Berlin")
    evaluator = Evaluator(tiny_handle, ["edit_succ"], EvalOptions(use_cache=False, chat_template=True))
    evaluator.prepare([case])
    context = "New Fact: The capital of France is Berlin\nPrompt: "
    evaluator.evaluate([case], contexts={"c": context})
    assert model_inputs == [ids(tok, TURN.format(context + case.prompt) + "Berlin")]


class Recorder(Method):
    """Edits nothing but records what a weight editor is handed and its training target's ids."""

    name = "recorder"
    capabilities = Capabilities(batch=True)
    handed: ClassVar[list[EditCase]] = []
    targets: ClassVar[list[list[int]]] = []

    def apply(self, handle, cases, hparams):
        batch = encode_answers(handle.tokenizer, [c.prompt for c in cases], [c.target_new for c in cases])
        Recorder.handed.extend(cases)
        Recorder.targets.extend(
            batch.input_ids[b][batch.attention_mask[b].bool()].tolist() for b in range(len(cases))
        )
        return AppliedEdit()


class Teller(Method):
    """An in-context editor that records the cases it is handed."""

    name = "teller"
    capabilities = Capabilities(edits_weights=False)
    handed: ClassVar[list[EditCase]] = []

    def apply(self, handle, cases, hparams):
        Teller.handed.extend(cases)
        edit = AppliedEdit()
        edit.context = "".join(f"New Fact: {c.prompt} {c.target_new}\nPrompt: " for c in cases)
        return edit


class Users(Task):
    """One edit whose subject, "user", the tiny models' chat template also writes ("<|im_start|>user")."""

    name = "users"
    record_format = "zsre"
    metrics = ("edit_succ",)

    def load(self, *, split="test", data_dir=None, skip_invalid=False) -> LoadedCases:
        case = EditCase(case_id="u", prompt="The user of the car is", target_new="Anna", subject="user")
        return LoadedCases((case,), source="<users>")


class Recorders:
    @hookimpl
    def harness_register_methods(self, register):
        register(Recorder.name, Recorder)
        register(Teller.name, Teller)

    @hookimpl
    def harness_register_tasks(self, register):
        register(Users.name, Users)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog(build_registry(extra_plugins=[("runs-test", Plugin()), ("recorders", Recorders())]))


def test_a_run_edits_and_records_in_the_chat_template(catalog, tiny_model_dirs, tmp_path) -> None:
    for recorded in (Recorder.handed, Recorder.targets, Teller.handed):
        recorded.clear()
    model = str(tiny_model_dirs["llama"])
    config = RunConfig(
        model=model, methods=("recorder", "teller"), tasks=("facts",), limit=2, chat_template=True
    )
    execute(config, tmp_path / "run", device="cpu", catalog=catalog, progress=False, warn=lambda m: None)

    tok = load_model(model, device="cpu").tokenizer
    raw = fact_cases("f")[:2]
    assert Recorder.targets == [ids(tok, TURN.format(c.prompt) + c.target_new) for c in raw]
    (first, _) = Recorder.handed
    assert first.rephrases == (TURN.format(raw[0].rephrases[0]),)
    assert first.locality["relation_specificity"][0].prompt == TURN.format("Water boils at one hundred")
    assert Teller.handed == list(raw)  # the evaluator renders its context together with each probe

    manifest = RunStore(tmp_path / "run").read_manifest()
    assert manifest["config"]["chat_template"] is True
    settings = manifest["evaluation"]["facts"]
    assert settings["options"]["chat_template"] is True
    assert settings["chat_template_text"] == tok.chat_template


def test_a_subject_the_template_also_writes_is_refused_before_the_first_edit(
    catalog, tiny_model_dirs, tmp_path
):
    config = RunConfig(
        model=str(tiny_model_dirs["llama"]), methods=("rome",), tasks=("users",), chat_template=True
    )
    with pytest.raises(
        HarnessError,
        match=r"rome/users/single: in the model's chat template, rome cannot edit 1 of 1 cases "
        r"\(first: rome: case u: field 'subject' \('user'\) occurs 2 times",
    ):
        execute(config, tmp_path / "run", device="cpu", catalog=catalog, progress=False, warn=lambda m: None)
    assert not [row for row in RunStore(tmp_path / "run").rows()]


def test_off_by_default_and_recorded_so(catalog, tiny_model_dirs) -> None:
    config, _ = plan(
        RunConfig(model=str(tiny_model_dirs["gpt2"]), methods=("nudge",), tasks=("facts",)), catalog
    )
    assert config.chat_template is False and config.to_json()["chat_template"] is False


def _spec(folder: Path, chat_template) -> Path:
    data = folder / "facts.json"
    data.write_text(json.dumps([{"subject": "France", "src": "The capital of France is", "alt": "Berlin"}]))
    spec = folder / f"spec-{chat_template}.json"
    fields = {"subject": "subject", "prompt": "src", "target_new": "alt"}
    spec.write_text(
        json.dumps(
            {
                "name": f"chatty-{folder.name}",
                "files": {"test": str(data)},
                "fields": fields,
                "chat_template": chat_template,
            }
        )
    )
    return spec


def test_a_dataset_spec_turns_the_template_on_for_its_run(catalog, tiny_model_dirs, tmp_path) -> None:
    model = str(tiny_model_dirs["gpt2"])
    config, _ = plan(RunConfig(model=model, methods=("nudge",), tasks=(str(_spec(tmp_path, True)),)), catalog)
    assert config.chat_template is True
    with pytest.raises(HarnessError, match=r'at \$\.chat_template: expected boolean, got string "yes"'):
        plan(RunConfig(model=model, methods=("nudge",), tasks=(str(_spec(tmp_path, "yes")),)), catalog)


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> Path:
    """A tiny model folder whose tokenizer has no chat template, as a base model's."""
    folder = build_tiny_model(tmp_path_factory.mktemp("base") / "gpt2", "gpt2")
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config.pop("chat_template", None)
    config_file.write_text(json.dumps(config))
    return folder


def test_a_model_without_a_chat_template_is_refused_before_it_loads(
    catalog, base_model, tiny_model_dirs, tmp_path
):
    assert has_chat_template(base_model) is False and has_chat_template(tiny_model_dirs["gpt2"]) is True
    assert has_chat_template("someone/not-in-the-cache") is None
    out = tmp_path / "run"
    config = RunConfig(model=str(base_model), methods=("nudge",), tasks=("facts",), chat_template=True)
    with pytest.raises(
        PlanError, match=r"has no chat template in its tokenizer files, .*\(--chat-template\)"
    ):
        execute(config, out, device="cpu", catalog=catalog, progress=False)
    spec = RunConfig(model=str(base_model), methods=("nudge",), tasks=(str(_spec(tmp_path, True)),))
    with pytest.raises(PlanError, match=r"asked for by '.*spec-True.json': \"chat_template\": true"):
        execute(spec, out, device="cpu", catalog=catalog, progress=False)
    assert not out.exists()
    # A model whose files could not be read before loading is refused when the evaluator is made.
    with pytest.raises(HarnessError, match="has no chat template"):
        Evaluator(load_model(base_model, device="cpu"), ["edit_succ"], EvalOptions(chat_template=True))


def test_lm_eval_applies_the_chat_template_and_keys_its_cache_by_it(tiny_gpt2, monkeypatch) -> None:
    from lm_eval.models.huggingface import HFLM

    from harness.general import general_before

    rendered: list[str] = []
    original = HFLM.apply_chat_template

    def spy(self, chat_history, add_generation_prompt=True):
        rendered.append(original(self, chat_history, add_generation_prompt))
        return rendered[-1]

    monkeypatch.setattr(HFLM, "apply_chat_template", spy)
    general_before(tiny_gpt2, [MC], include_path=TASKS_DIR, limit=2)
    assert rendered == []
    general_before(tiny_gpt2, [MC], include_path=TASKS_DIR, limit=2, chat_template=True)
    assert len(rendered) == 2 and all(text.startswith("<|im_start|>user\n") for text in rendered)
    assert all(text.endswith("<|im_end|>\n<|im_start|>assistant\n") for text in rendered)
