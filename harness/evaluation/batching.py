"""Running distinct requests in padded, length-sorted batches.

Teacher-forced scoring asks the model only for the logits it needs (`logits_to_keep` from the first
answer position of the batch on) and normalizes only the answer positions, so scoring costs about
one bare forward pass over the same tokens. Generation is a KV-cached decode loop over left-padded
prompts with explicit position ids; each sampled row draws from its own seeded generator, so a
row's continuation does not depend on which other rows share its batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from harness.evaluation.options import EvalOptions
from harness.evaluation.requests import Generation, Request, TokenScores
from harness.ground import HarnessError
from harness.models.tokenization import AnswerBatch, encode_answers, encode_prompts

#: Told how many requests a batch has just finished (a progress bar's update).
OnBatch = Callable[[int], None]


@dataclass(frozen=True)
class ScoreJob:
    """A score request to run, with the pre-edit top-k ids to read a post-edit distribution at."""

    request: Request
    ref_ids: tuple[tuple[int, ...], ...] | None = None


def length_batches(lengths: Sequence[int], options: EvalOptions, extra: int = 0) -> Iterator[list[int]]:
    """Indices grouped into batches of similar length, longest first, within the token budget
    (`extra` tokens per row are added for generated continuations)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batch: list[int] = []
    for i in order:
        width = lengths[batch[0] if batch else i] + extra
        if batch and (
            len(batch) == options.max_batch_size or (len(batch) + 1) * width > options.max_batch_tokens
        ):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def position_limit(model) -> int | None:
    """How many positions the model has (None when its config does not say)."""
    return getattr(model.config, "max_position_embeddings", None)


def over_limit(limit: int | None, lengths: Sequence[int], requests: Sequence[Request]) -> list[int]:
    """Indices of the requests whose sequence, tokens to generate included, is longer than `limit`
    positions: absolute-position models fail with an index error there, rotary ones return numbers
    from beyond their training length."""
    return [i for i, n in enumerate(lengths) if limit and n + requests[i].max_new_tokens > limit]


def request_lengths(tokenizer, requests: Sequence[Request]) -> list[int]:
    """The tokens of each request before any generation, encoded as the batches below encode
    them: the joined prompt and answer of a score request, the prompt of a generate request."""
    lengths = [0] * len(requests)
    for kind, encode in (("score", encode_answers), ("generate", encode_prompts)):
        chosen = [i for i, r in enumerate(requests) if r.kind == kind]
        if not chosen:
            continue
        texts = [[requests[i].prompt for i in chosen]]
        if kind == "score":
            texts.append([requests[i].answer for i in chosen])
        for i, n in zip(chosen, encode(tokenizer, *texts).attention_mask.sum(-1).tolist(), strict=True):
            lengths[i] = n
    return lengths


def check_lengths(model, lengths: Sequence[int], requests: Sequence[Request]) -> None:
    """Refuse a sequence longer than the model's positions (see `over_limit`)."""
    limit = position_limit(model)
    over = over_limit(limit, lengths, requests)
    if over:
        n, request = lengths[over[0]], requests[over[0]]
        new = f" + {request.max_new_tokens} to generate" if request.max_new_tokens else ""
        raise HarnessError(
            f"{len(over)} probe(s) need more than the model's {limit} positions; the first has "
            f"{n} tokens{new}: prompt {request.prompt[:80]!r}"
        )


def _rows(enc: AnswerBatch, rows: list[int], side: str) -> AnswerBatch:
    """Rows of a padded batch, with the padding that no remaining row needs cut away."""
    mask = enc.attention_mask[rows]
    width = int(mask.sum(-1).max())
    cut = slice(mask.shape[1] - width, None) if side == "left" else slice(0, width)
    shift = mask.shape[1] - width if side == "left" else 0
    return AnswerBatch(
        enc.input_ids[rows][:, cut],
        mask[:, cut],
        enc.position_ids[rows][:, cut],
        enc.last_index[rows] - shift,
        enc.answer_start[rows] - shift,
        enc.answer_end[rows] - shift,
    )


def _forward_logits(model, batch: AnswerBatch, first_position: int) -> tuple[torch.Tensor, int]:
    """Logits from `first_position` on, and the offset to subtract from a position to index them."""
    width = batch.input_ids.shape[1]
    keep = width - first_position
    logits = model(**batch.model_inputs(), use_cache=False, logits_to_keep=keep).logits
    return logits, width - logits.shape[1]


def run_scores(
    model, tokenizer, jobs: Sequence[ScoreJob], options: EvalOptions, on_batch: OnBatch | None = None
) -> list[TokenScores]:
    """Teacher-forced scores for every job, in order; `on_batch(n)` after each batch of n jobs."""
    if not jobs:
        return []
    device = next(model.parameters()).device
    enc = encode_answers(
        tokenizer,
        [j.request.prompt for j in jobs],
        [j.request.answer for j in jobs],
        padding_side=options.padding_side,
    )
    lengths = enc.attention_mask.sum(-1).tolist()
    check_lengths(model, lengths, [j.request for j in jobs])
    results: list[TokenScores | None] = [None] * len(jobs)
    for rows in length_batches(lengths, options):
        batch = _rows(enc, rows, options.padding_side).to(device)
        first = int(batch.answer_start.min()) - 1
        logits, offset = _forward_logits(model, batch, first)
        starts, ends = batch.answer_start.tolist(), batch.answer_end.tolist()
        row_idx = torch.cat(
            [torch.full((e - s,), b) for b, (s, e) in enumerate(zip(starts, ends, strict=False))]
        )
        pos_idx = torch.cat([torch.arange(s - 1, e - 1) for s, e in zip(starts, ends, strict=False)])
        logprobs = torch.log_softmax(logits[row_idx.to(device), (pos_idx - offset).to(device)].float(), -1)
        gold = batch.input_ids[row_idx.to(device), (pos_idx + 1).to(device)]
        pred = logprobs.argmax(-1)
        gold_lp = logprobs.gather(-1, gold[:, None])[:, 0]
        gold_rank = (logprobs > gold_lp[:, None]).sum(-1) + 1
        at = 0
        for b, i in enumerate(rows):
            n = ends[b] - starts[b]
            span = slice(at, at + n)
            at += n
            results[i] = _token_scores(
                jobs[i], logprobs[span], pred[span], gold[span], gold_lp[span], gold_rank[span]
            )
        if on_batch is not None:
            on_batch(len(rows))
    return [r for r in results if r is not None]


def _token_scores(job: ScoreJob, logprobs, pred, gold, gold_lp, gold_rank) -> TokenScores:
    dist_ids: tuple[tuple[int, ...], ...] = ()
    dist_lp: tuple[tuple[float, ...], ...] = ()
    if job.request.dist_top_k:
        if job.ref_ids is not None:
            ids = torch.tensor(job.ref_ids, dtype=torch.long, device=logprobs.device)
            values = logprobs.gather(-1, ids)
        else:
            values, ids = logprobs.topk(min(job.request.dist_top_k, logprobs.shape[-1]), dim=-1)
        dist_ids = tuple(tuple(row) for row in ids.tolist())
        dist_lp = tuple(tuple(row) for row in values.tolist())
    return TokenScores(
        tuple(pred.tolist()),
        tuple(gold.tolist()),
        tuple(gold_lp.tolist()),
        dist_ids,
        dist_lp,
        tuple(gold_rank.tolist()),
    )


def _eos_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is not None:
        ids |= set(configured) if isinstance(configured, list) else {configured}
    return ids


def _kv_cache(result) -> dict:
    """The keyword that hands a forward pass's key/value cache to the next step: transformers 5.2x
    calls it `cache` (on the output and in `forward`), earlier releases `past_key_values`."""
    if hasattr(result, "cache"):
        return {"cache": result.cache}
    return {"past_key_values": result.past_key_values}


def run_generations(
    model, tokenizer, requests: Sequence[Request], options: EvalOptions, on_batch: OnBatch | None = None
) -> list[Generation]:
    """Continuations for every generate request, in order; `on_batch(n)` after each batch of n."""
    if not requests:
        return []
    device = next(model.parameters()).device
    enc = encode_prompts(tokenizer, [r.prompt for r in requests], padding_side="left")
    lengths = enc.attention_mask.sum(-1).tolist()
    longest_new = max(r.max_new_tokens for r in requests)
    check_lengths(model, lengths, requests)
    eos = _eos_ids(model, tokenizer)
    results: list[Generation | None] = [None] * len(requests)
    for rows in length_batches(lengths, options, extra=longest_new):
        mask = enc.attention_mask[rows]
        width = int(mask.sum(-1).max())
        ids = enc.input_ids[rows][:, -width:].to(device)
        mask = mask[:, -width:].to(device)
        positions = enc.position_ids[rows][:, -width:].to(device)
        batch_requests = [requests[i] for i in rows]
        tokens = _decode(model, ids, mask, positions, batch_requests, eos, tokenizer.pad_token_id)
        for i, row in zip(rows, tokens, strict=False):
            results[i] = Generation(tuple(row), tokenizer.decode(row, skip_special_tokens=True))
        if on_batch is not None:
            on_batch(len(rows))
    return [r for r in results if r is not None]


def _decode(
    model, ids, mask, positions, requests: Sequence[Request], eos: set[int], pad: int
) -> list[list[int]]:
    """KV-cached decoding; a row stops at its own max_new_tokens, or before EOS when its request
    says `stop_at_eos` (an EOS of a row that goes on is fed back like any token)."""
    device = ids.device
    limits = torch.tensor([r.max_new_tokens for r in requests], device=device)
    generators = [torch.Generator(device=device).manual_seed(r.seed) if r.top_k else None for r in requests]
    eos_t = torch.tensor(sorted(eos), device=device, dtype=torch.long)
    stops = torch.tensor([r.stop_at_eos for r in requests], device=device)
    done = torch.zeros(len(requests), dtype=torch.bool, device=device)
    out: list[list[int]] = [[] for _ in requests]
    next_pos = positions[:, -1:] + 1
    step_inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
    result = model(**step_inputs, use_cache=True, logits_to_keep=1)
    for step in range(int(limits.max())):
        logits = result.logits[:, -1].float()
        chosen = logits.argmax(-1)
        for b, (request, gen) in enumerate(zip(requests, generators, strict=False)):
            if gen is not None and not done[b]:
                values, idx = logits[b].topk(request.top_k)
                pick = torch.multinomial(torch.softmax(values, -1), 1, generator=gen)
                chosen[b] = idx[pick[0]]
        done |= limits <= step
        finished = (torch.isin(chosen, eos_t) & stops) | done
        for b in (~finished).nonzero()[:, 0].tolist():
            out[b].append(int(chosen[b]))
        done = finished
        if bool(done.all()):
            break
        chosen = chosen.masked_fill(done, pad)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        result = model(
            input_ids=chosen[:, None],
            attention_mask=mask,
            position_ids=next_pos,
            **_kv_cache(result),
            use_cache=True,
            logits_to_keep=1,
        )
        next_pos = next_pos + 1
    return out
