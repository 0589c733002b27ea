"""Evaluation throughput on real ZsRE records and SmolLM2-135M: the batched engine against a bare
batched forward pass over the same token sequences, fluency generation against a bare batched
`generate`, and the reference toolkit's one-forward-per-probe pattern.

    python benchmarks/eval_throughput.py --n 50 [--device cpu] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch
import transformers

from harness.api import EditCase, Probe
from harness.evaluation.batching import length_batches
from harness.evaluation.evaluator import Evaluator
from harness.evaluation.options import EvalOptions
from harness.models.load import load_model
from harness.models.tokenization import encode_answers, encode_prompts

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "knowedit" / "ZsRE" / "ZsRE-test-all.json"
PROBE_METRICS = ["edit_succ", "generalization", "portability", "locality"]


def first_answer(value) -> str:
    while isinstance(value, list):
        value = value[0] if value else ""
    return value


def zsre_cases(path: Path, n: int) -> list[EditCase]:
    def probes(groups: dict) -> dict[str, tuple[Probe, ...]]:
        return {
            g.lower(): tuple(Probe(p["prompt"], (first_answer(p["ground_truth"]),)) for p in items)
            for g, items in groups.items()
        }

    records = json.loads(path.read_text())[:n]
    return [
        EditCase(
            case_id=str(i),
            prompt=r["prompt"],
            target_new=r["target_new"],
            rephrases=(r["rephrase_prompt"],) if r.get("rephrase_prompt") else (),
            portability=probes(r.get("portability", {})),
            locality=probes(r.get("locality", {})),
        )
        for i, r in enumerate(records)
    ]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bare_forward(handle, requests, options: EvalOptions) -> None:
    """The same sequences, the same batches, a plain forward pass with full logits and nothing else."""
    enc = encode_answers(
        handle.tokenizer, [r.prompt for r in requests], [r.answer for r in requests], padding_side="left"
    )
    lengths = enc.attention_mask.sum(-1).tolist()
    with torch.inference_mode():
        for rows in length_batches(lengths, options):
            width = max(lengths[i] for i in rows)
            handle.model(
                input_ids=enc.input_ids[rows][:, -width:].to(handle.device),
                attention_mask=enc.attention_mask[rows][:, -width:].to(handle.device),
                position_ids=enc.position_ids[rows][:, -width:].to(handle.device),
            )


def per_probe_forward(handle, requests) -> None:
    """The reference pattern: one forward per probe, unbatched."""
    with torch.inference_mode():
        for r in requests:
            enc = encode_answers(handle.tokenizer, [r.prompt], [r.answer])
            handle.model(input_ids=enc.input_ids.to(handle.device))


def bare_generate(handle, prompts, new_tokens: int, options: EvalOptions) -> None:
    enc = encode_prompts(handle.tokenizer, prompts, padding_side="left")
    lengths = enc.attention_mask.sum(-1).tolist()
    with torch.inference_mode():
        for rows in length_batches(lengths, options, extra=new_tokens):
            handle.model.generate(
                input_ids=enc.input_ids[rows].to(handle.device),
                attention_mask=enc.attention_mask[rows].to(handle.device),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=True,
                top_k=5,
                pad_token_id=handle.tokenizer.pad_token_id,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--fluency-tokens", type=int, default=100)
    args = parser.parse_args()

    handle = load_model("smollm2-135m", device=args.device)
    handle.fingerprint()
    cases = zsre_cases(args.data, args.n)
    options = EvalOptions(fluency_max_new_tokens=args.fluency_tokens)
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"transformers {transformers.__version__}, "
        f"device {handle.device}"
    )
    print(f"data: {args.n} ZsRE records from {args.data}")

    evaluator = Evaluator(handle, PROBE_METRICS, replace(options, use_cache=False))
    requests = sorted({r for c in cases for r in evaluator.requests(c)}, key=lambda r: (r.prompt, r.answer))
    pre_s = timed(lambda: evaluator.prepare(cases))
    post_s = timed(lambda: evaluator.evaluate(cases))
    Evaluator(handle, PROBE_METRICS, options).prepare(cases)  # fills the disk cache if it is empty
    pre_again = Evaluator(handle, PROBE_METRICS, options)
    reuse_s = timed(lambda: pre_again.prepare(cases))
    bare_s = timed(lambda: bare_forward(handle, requests, options))
    naive_s = timed(lambda: per_probe_forward(handle, requests))
    print(f"teacher-forced probes: {len(requests)} distinct sequences")
    print(
        f"  pre-edit (computed): {pre_s:.2f} s; pre-edit again from the disk cache: {reuse_s:.2f} s "
        f"({pre_again.pre_computed} recomputed)"
    )
    print(f"  post-edit evaluate: {post_s:.2f} s = {args.n / post_s:.1f} cases/s")
    print(
        f"  bare batched forward over all sequences: {bare_s:.2f} s; engine/bare = {post_s / bare_s:.2f}x "
        "(post scores only the post-phase probes, a subset: see the line below)"
    )
    everything = Evaluator(handle, PROBE_METRICS, EvalOptions(use_cache=False))
    all_s = timed(lambda: everything.evaluate_pre(cases))
    print(
        f"  engine over all sequences (evaluate_pre, no cache): {all_s:.2f} s; "
        f"engine/bare = {all_s / bare_s:.2f}x"
    )
    print(
        f"  one forward per probe (reference pattern): {naive_s:.2f} s; "
        f"speed-up of the engine {naive_s / all_s:.1f}x"
    )

    fluency = Evaluator(handle, ["fluency"], options)
    prompts = [c.prompt for c in cases]
    gen_s = timed(lambda: fluency.evaluate_pre(cases))
    bare_gen_s = timed(lambda: bare_generate(handle, prompts, args.fluency_tokens, options))
    print(
        f"fluency: {args.fluency_tokens} sampled tokens per prompt: engine {gen_s:.2f} s, bare batched "
        f"generate (KV cache) {bare_gen_s:.2f} s, ratio {gen_s / bare_gen_s:.2f}x"
    )


if __name__ == "__main__":
    main()
