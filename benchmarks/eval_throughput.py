"""Evaluation throughput on real ZsRE records and SmolLM2-135M: the batched engine against a bare
batched forward pass over the same token sequences, fluency generation against a bare batched
`generate`, and the reference toolkit's one-forward-per-probe pattern; then, as a run scores them,
case by case (`--cases`): a case's teacher-forced probes against one bare batched forward pass over
the same sequences, and its fluency text against a bare KV-cached `generate` of the same length,
engine and bare operation timed in turn for every case so that a change of load hits both alike.

    python benchmarks/eval_throughput.py --n 50 [--cases 20] [--device cpu] [--data KNOWEDIT_DIR]
                                         [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch
import transformers

from harness.evaluation.batching import length_batches
from harness.evaluation.options import EvalOptions
from harness.models.load import load_model
from harness.models.tokenization import encode_answers, encode_prompts
from harness.plugins import get_registry
from harness.testing import Evaluator, resolve_task

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "knowedit"
PROBE_METRICS = ["edit_succ", "generalization", "portability", "locality"]


def timed(fn, repeat: int = 1) -> float:
    """The best of `repeat` wall-clock times: the least disturbed by other work on the machine."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


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


def per_case(handle, cases, options: EvalOptions, new_tokens: int) -> None:
    """Single-case scoring, as a run does it after each edit: summed seconds of the engine and of
    the bare operation over the cases, each pair timed back to back (CPU seconds of this process)."""
    fresh = replace(options, use_cache=False)
    probes = Evaluator(handle, PROBE_METRICS, fresh)
    fluency = Evaluator(handle, ["fluency"], fresh)
    probes.prepare(cases)
    totals = {"score": 0.0, "forward": 0.0, "fluency": 0.0, "generate": 0.0}

    def cpu(fn) -> float:
        start = time.process_time()
        fn()
        return time.process_time() - start

    for case in cases:
        requests = probes.requests(case)
        totals["score"] += cpu(lambda case=case: probes.evaluate([case]))
        totals["forward"] += cpu(lambda requests=requests: bare_forward(handle, requests, options))
        totals["fluency"] += cpu(lambda case=case: fluency.evaluate_pre([case]))
        totals["generate"] += cpu(lambda case=case: bare_generate(handle, [case.prompt], new_tokens, options))
    print(f"single cases ({len(cases)}), CPU seconds per case:")
    print(
        f"  teacher-forced probes: engine {totals['score'] / len(cases):.3f} s, bare batched forward "
        f"{totals['forward'] / len(cases):.3f} s, ratio {totals['score'] / totals['forward']:.2f}x"
    )
    print(
        f"  fluency ({new_tokens} tokens): engine {totals['fluency'] / len(cases):.3f} s, bare generate "
        f"{totals['generate'] / len(cases):.3f} s, ratio {totals['fluency'] / totals['generate']:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", type=Path, default=DATA, help="the KnowEdit folder")
    parser.add_argument("--fluency-tokens", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3, help="timings are the best of this many runs")
    parser.add_argument("--cases", type=int, default=20, help="cases scored one at a time (0: none)")
    parser.add_argument("--skip-batched", action="store_true", help="only the single-case comparison")
    args = parser.parse_args()

    handle = load_model(
        "smollm2-135m", device=args.device, alias=get_registry().models.locate("smollm2-135m")
    )
    handle.fingerprint()
    cases = resolve_task("zsre").load(data_dir=str(args.data)).cases[: args.n]
    options = EvalOptions(metric_options={"fluency_max_new_tokens": args.fluency_tokens})
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"transformers {transformers.__version__}, "
        f"device {handle.device}"
    )
    print(f"data: {args.n} ZsRE records from {args.data}; load average {os.getloadavg()}")
    if args.cases:
        per_case(handle, cases[: args.cases], options, args.fluency_tokens)
    if args.skip_batched:
        print(f"load average at the end {os.getloadavg()}")
        return

    fresh = replace(options, use_cache=False)
    evaluator = Evaluator(handle, PROBE_METRICS, fresh)
    requests = sorted({r for c in cases for r in evaluator.requests(c)}, key=lambda r: (r.prompt, r.answer))
    bare_forward(handle, requests[:8], options)  # warm-up: first calls allocate
    pre_s = timed(lambda: evaluator.prepare(cases))
    post_s = timed(lambda: evaluator.evaluate(cases), args.repeat)
    bare_s = timed(lambda: bare_forward(handle, requests, options), args.repeat)
    naive_s = timed(lambda: per_probe_forward(handle, requests))
    Evaluator(handle, PROBE_METRICS, options).prepare(cases)  # fills the disk cache if it is empty
    second_method = Evaluator(handle, PROBE_METRICS, options)
    reuse_s = timed(lambda: second_method.prepare(cases))
    print(f"teacher-forced probes: {len(requests)} distinct sequences, all scored post-edit")
    print(
        f"  pre-edit (computed): {pre_s:.2f} s; a second method's pre-edit from the disk cache: "
        f"{reuse_s:.2f} s ({second_method.pre_computed} outcomes recomputed)"
    )
    print(f"  post-edit evaluate: {post_s:.2f} s = {args.n / post_s:.1f} cases/s")
    print(f"  bare batched forward over the same sequences: {bare_s:.2f} s")
    print(f"  engine / bare forward = {post_s / bare_s:.2f}x")
    print(
        f"  one forward per probe (reference pattern): {naive_s:.2f} s; "
        f"speed-up of the engine {naive_s / post_s:.1f}x"
    )

    prompts = [c.prompt for c in cases]
    gen_s = timed(lambda: Evaluator(handle, ["fluency"], fresh).evaluate_pre(cases), args.repeat)
    bare_gen_s = timed(lambda: bare_generate(handle, prompts, args.fluency_tokens, options), args.repeat)
    print(
        f"fluency: {args.fluency_tokens} sampled tokens per prompt: engine {gen_s:.2f} s, bare batched "
        f"generate (KV cache) {bare_gen_s:.2f} s, ratio {gen_s / bare_gen_s:.2f}x"
    )


if __name__ == "__main__":
    main()
