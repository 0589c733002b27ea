"""The prompt/answer boundary, padding and chat rendering on both tokenizer families."""

from __future__ import annotations

import pytest
import torch

from harness.api import EditCase, EvalOptions, HarnessError, Probe
from harness.models.handle import ModelHandle
from harness.models.tokenization import (
    chat_case,
    encode_answers,
    encode_prompts,
    join_prompt_answer,
    render_chat,
    trim_prompt,
)
from harness.testing import Evaluator

PROMPTS = ["The capital of France is", "Who", "The mother tongue of Danielle Darrieux is"]
ANSWERS = ["Paris", " Berlin, the capital of Germany", "Zyxqvé 漢字"]


def answer_ids(batch, row: int) -> list[int]:
    return batch.input_ids[row, batch.answer_start[row] : batch.answer_end[row]].tolist()


def real_ids(batch, row: int) -> list[int]:
    return batch.input_ids[row][batch.attention_mask[row].bool()].tolist()


#: One fact, its seam written every way whitespace allows: all must encode and score alike.
PROMPT_VARIANTS = ["The capital of France is", "The capital of France is ", "The capital of France is \t "]
ANSWER_VARIANTS = ["Paris", " Paris", "Paris ", "  Paris \n"]


def test_join_adds_one_space_unless_the_answer_has_one() -> None:
    assert join_prompt_answer("The capital is", "Paris") == "The capital is Paris"
    assert join_prompt_answer("The capital is", " Paris") == "The capital is Paris"
    assert join_prompt_answer("Q:", "\nA") == "Q:\nA"


@pytest.mark.parametrize("prompt", PROMPT_VARIANTS)
@pytest.mark.parametrize("answer", ANSWER_VARIANTS)
def test_the_seam_is_one_space_however_it_is_written(prompt: str, answer: str) -> None:
    assert join_prompt_answer(prompt, answer) == "The capital of France is Paris"
    assert trim_prompt(prompt) == "The capital of France is"


def test_line_breaks_at_the_seam_end_the_prompt_and_punctuation_keeps_its_space() -> None:
    # A chat template's generation prompt, a Q/A format: the answer follows the line break.
    assert join_prompt_answer("<|im_start|>assistant\n", " Paris") == "<|im_start|>assistant\nParis"
    assert join_prompt_answer("Q: Where?\n  ", "Paris") == "Q: Where?\nParis"
    assert join_prompt_answer("Q: Where? \n\n", " Paris") == "Q: Where?\n\nParis"
    assert trim_prompt("Q: Where?\n ") == "Q: Where?\n"
    # Names that start with punctuation are words of their own: the rule touches whitespace only.
    assert (
        join_prompt_answer("The cartridge is the", ".338 Lapua Magnum")
        == "The cartridge is the .338 Lapua Magnum"
    )
    assert join_prompt_answer("The city is ", "'s-Hertogenbosch") == "The city is 's-Hertogenbosch"


def test_whitespace_variants_encode_to_the_same_tokens_and_answer(tiny_handle: ModelHandle) -> None:
    tok = tiny_handle.tokenizer
    pairs = [(p, a) for p in PROMPT_VARIANTS for a in ANSWER_VARIANTS]
    batch = encode_answers(tok, [p for p, _ in pairs], [a for _, a in pairs])
    assert (batch.input_ids == batch.input_ids[0]).all()
    assert (batch.answer_start == batch.answer_start[0]).all()
    assert (batch.answer_end == batch.answer_end[0]).all()
    assert tok.decode(answer_ids(batch, 0)).strip() == "Paris"
    assert real_ids(batch, 0) == tok("The capital of France is Paris").input_ids
    # Generation and next-token prompts: no lone space token at the end, the same ids for every
    # variant, and exactly the prompt part of the joined text.
    prompts = encode_prompts(tok, PROMPT_VARIANTS, padding_side="right")
    plain = tok("The capital of France is").input_ids
    for row in range(len(PROMPT_VARIANTS)):
        assert real_ids(prompts, row) == plain
        assert int(prompts.last_index[row]) == len(plain) - 1
    assert real_ids(batch, 0)[: int(batch.answer_start[0])] == plain


def test_a_line_break_at_the_seam_is_never_scored(tiny_handle: ModelHandle) -> None:
    tok = tiny_handle.tokenizer
    newline = tok("Q: Where is the Eiffel Tower?\n").input_ids[-1]
    for prompt, answer in [
        ("Q: Where is the Eiffel Tower?\n", " Paris"),
        ("Q: Where is the Eiffel Tower?", "\nParis"),
    ]:
        batch = encode_answers(tok, [prompt], [answer])
        start = int(batch.answer_start[0])
        assert int(batch.input_ids[0, start - 1]) == newline
        assert tok.decode(answer_ids(batch, 0)) == "Paris"


@pytest.mark.parametrize("side", ["left", "right"])
def test_answer_tokens_decode_to_the_answer(tiny_handle: ModelHandle, side: str) -> None:
    tok = tiny_handle.tokenizer
    batch = encode_answers(tok, PROMPTS, ANSWERS, padding_side=side)
    for row, (prompt, answer) in enumerate(zip(PROMPTS, ANSWERS, strict=True)):
        assert tok.decode(answer_ids(batch, row)).strip() == answer.strip()
        full = tok(join_prompt_answer(prompt, answer)).input_ids
        assert real_ids(batch, row) == full
        assert full[: batch.answer_start[row] - _pads(batch, row, side)] == tok(prompt).input_ids
        assert int(batch.answer_end[row]) == int(batch.last_index[row]) + 1
    assert (batch.answer_end - batch.answer_start).min() >= 1
    assert (batch.answer_end - batch.answer_start)[1:].min() > 1  # multi-token answers


def _pads(batch, row: int, side: str) -> int:
    return int((batch.attention_mask[row] == 0).sum()) if side == "left" else 0


def test_padding_sides_agree_on_every_row(tiny_handle: ModelHandle) -> None:
    left = encode_answers(tiny_handle.tokenizer, PROMPTS, ANSWERS, padding_side="left")
    right = encode_answers(tiny_handle.tokenizer, PROMPTS, ANSWERS, padding_side="right")
    for row in range(len(PROMPTS)):
        assert answer_ids(left, row) == answer_ids(right, row)
        assert real_ids(left, row) == real_ids(right, row)
    assert (left.attention_mask[:, -1] == 1).all() and (right.attention_mask[:, 0] == 1).all()


def test_a_leading_space_does_not_change_the_tokens(tiny_handle: ModelHandle) -> None:
    plain = encode_answers(tiny_handle.tokenizer, ["The capital of France is"], ["Paris"])
    spaced = encode_answers(tiny_handle.tokenizer, ["The capital of France is"], [" Paris"])
    assert torch.equal(plain.input_ids, spaced.input_ids) and plain.answer_start == spaced.answer_start


def test_bos_only_for_llama_style_tokenizers(tiny_llama: ModelHandle, tiny_gpt2: ModelHandle) -> None:
    llama = encode_answers(tiny_llama.tokenizer, PROMPTS, ANSWERS, padding_side="right")
    gpt2 = encode_answers(tiny_gpt2.tokenizer, PROMPTS, ANSWERS, padding_side="right")
    assert (llama.input_ids[:, 0] == tiny_llama.tokenizer.bos_token_id).all()
    assert not (gpt2.input_ids[:, 0] == tiny_gpt2.tokenizer.bos_token_id).any()


def test_padding_side_of_the_tokenizer_is_never_changed(tiny_handle: ModelHandle) -> None:
    tok = tiny_handle.tokenizer
    tok.padding_side = "left"
    encode_answers(tok, PROMPTS, ANSWERS, padding_side="right")
    encode_prompts(tok, PROMPTS, padding_side="right")
    assert tok.padding_side == "left"


@torch.no_grad()
def test_left_and_right_padding_give_the_same_answer_logits(tiny_handle: ModelHandle) -> None:
    """Holds only if position_ids are right under left padding."""
    model, tok = tiny_handle.model, tiny_handle.tokenizer
    batches = [encode_answers(tok, PROMPTS, ANSWERS, padding_side=s) for s in ("left", "right")]
    logits = [model(**b.model_inputs()).logits for b in batches]
    for row in range(len(PROMPTS)):
        spans = [
            lg[row, b.answer_start[row] - 1 : b.answer_end[row] - 1]
            for lg, b in zip(logits, batches, strict=True)
        ]
        torch.testing.assert_close(spans[0], spans[1], atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_prompt_last_index_predicts_the_same_next_token(tiny_handle: ModelHandle) -> None:
    model, tok = tiny_handle.model, tiny_handle.tokenizer
    outs = []
    for side in ("left", "right"):
        batch = encode_prompts(tok, PROMPTS, padding_side=side)
        logits = model(**batch.model_inputs()).logits
        outs.append(logits[torch.arange(len(PROMPTS)), batch.last_index])
        for row, prompt in enumerate(PROMPTS):
            assert int(batch.input_ids[row, batch.last_index[row]]) == tok(prompt).input_ids[-1]
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-4)


def test_chat_rendering_wraps_one_user_turn(tiny_handle: ModelHandle) -> None:
    text = render_chat(tiny_handle.tokenizer, "The capital of France is", system="Be brief.")
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert text.endswith("<|im_start|>user\nThe capital of France is<|im_end|>\n<|im_start|>assistant\n")
    batch = encode_answers(tiny_handle.tokenizer, [text], ["Paris"])
    assert tiny_handle.tokenizer.decode(answer_ids(batch, 0)).strip() == "Paris"


def test_chat_rendering_strips_the_user_text_and_the_answer_follows_the_turn(
    tiny_handle: ModelHandle,
) -> None:
    tok = tiny_handle.tokenizer
    text = render_chat(tok, "The capital of France is")
    assert {render_chat(tok, p) for p in PROMPT_VARIANTS} == {text}
    batch = encode_answers(tok, [text], [" Paris "])
    expected = tok(
        "<|im_start|>user\nThe capital of France is<|im_end|>\n<|im_start|>assistant\nParis"
    ).input_ids
    assert real_ids(batch, 0) == expected
    start = int(batch.answer_start[0])
    assert tok.convert_ids_to_tokens(expected[start - 1 : start]) == tok.tokenize("\n")[-1:]
    assert tok.decode(answer_ids(batch, 0)) == "Paris"


def test_a_chat_case_has_every_prompt_rendered_and_nothing_else_changed(tiny_llama: ModelHandle) -> None:
    tok = tiny_llama.tokenizer
    case = EditCase(
        case_id="c",
        prompt="The capital of France is",
        target_new="Berlin",
        subject="France",
        ground_truth=("Paris",),
        rephrases=("France's capital is",),
        portability={"reasoning": (Probe("The capital of the country of the Seine is", ("Berlin",)),)},
        locality={"relation_specificity": (Probe("The capital of Italy is", ("Rome",)),)},
        extras={"note": "kept"},
    )
    chat = chat_case(tok, case)
    assert chat.prompt == render_chat(tok, case.prompt) and case.subject in chat.prompt
    assert chat.rephrases == (render_chat(tok, "France's capital is"),)
    assert chat.portability["reasoning"][0] == Probe(
        render_chat(tok, case.portability["reasoning"][0].prompt), ("Berlin",)
    )
    assert chat.locality["relation_specificity"][0].prompt == render_chat(tok, "The capital of Italy is")
    unchanged = ("case_id", "target_new", "subject", "ground_truth", "extras")
    assert all(getattr(chat, name) == getattr(case, name) for name in unchanged)


def test_chat_without_template_is_an_error(tiny_gpt2: ModelHandle) -> None:
    tiny_gpt2.tokenizer.chat_template = None
    with pytest.raises(HarnessError, match="no chat template"):
        render_chat(tiny_gpt2.tokenizer, "hello")


def test_bad_inputs_are_clear_errors(tiny_llama: ModelHandle, tiny_gpt2: ModelHandle) -> None:
    tok = tiny_llama.tokenizer
    with pytest.raises(HarnessError, match="2 prompts but 1 answers"):
        encode_answers(tok, ["a", "b"], ["c"])
    with pytest.raises(HarnessError, match="answer to prompt 'The capital is' is empty"):
        encode_answers(tok, ["The capital is"], [" "])
    with pytest.raises(HarnessError, match="no token of its own"):
        encode_answers(tiny_gpt2.tokenizer, [""], ["Paris"])
    with pytest.raises(HarnessError, match="padding_side"):
        encode_prompts(tok, ["a"], padding_side="middle")


@pytest.mark.slow
def test_smollm2_boundary_has_no_bos_and_a_spaced_answer_token(smollm2: ModelHandle) -> None:
    tok = smollm2.tokenizer
    batch = encode_answers(tok, ["The capital of France is"], ["Paris"])
    assert tok.decode(answer_ids(batch, 0)) == " Paris"
    assert real_ids(batch, 0) == tok("The capital of France is Paris").input_ids
    assert tok.bos_token_id not in real_ids(batch, 0)


@pytest.mark.slow
def test_smollm2_scores_one_known_fact_alike_however_the_seam_is_written(smollm2: ModelHandle) -> None:
    """The unedited SmolLM2 knows the capital of France. Before the seam rule, the prompt with a
    trailing space scored edit success 0.0 (a lone space token was scored) and the answer "Paris "
    0.5; every variant must score what the plain one does, teacher-forced and generated alike."""
    cases = [
        EditCase(case_id=f"v{i}", prompt=prompt, target_new=answer)
        for i, (prompt, answer) in enumerate((p, a) for p in PROMPT_VARIANTS for a in ANSWER_VARIANTS)
    ]
    scores = Evaluator(smollm2, ["edit_succ", "contains"], EvalOptions(use_cache=False)).evaluate_pre(cases)
    assert scores == [{"edit_succ": 1.0, "contains": 1.0}] * len(cases)
