"""The prompt/answer boundary, padding and chat rendering on both tokenizer families."""

from __future__ import annotations

import pytest
import torch

from harness.api import HarnessError
from harness.models.handle import ModelHandle
from harness.models.tokenization import encode_answers, encode_prompts, join_prompt_answer, render_chat

PROMPTS = ["The capital of France is", "Who", "The mother tongue of Danielle Darrieux is"]
ANSWERS = ["Paris", " Berlin, the capital of Germany", "Zyxqvé 漢字"]


def answer_ids(batch, row: int) -> list[int]:
    return batch.input_ids[row, batch.answer_start[row] : batch.answer_end[row]].tolist()


def real_ids(batch, row: int) -> list[int]:
    return batch.input_ids[row][batch.attention_mask[row].bool()].tolist()


def test_join_adds_one_space_unless_the_answer_has_one() -> None:
    assert join_prompt_answer("The capital is", "Paris") == "The capital is Paris"
    assert join_prompt_answer("The capital is", " Paris") == "The capital is Paris"
    assert join_prompt_answer("Q:", "\nA") == "Q:\nA"


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
