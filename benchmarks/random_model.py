"""Write a random model of a real model's shape (default: SmolLM2-135M's) with the tiny test
tokenizer, for timing and GPU checks on machines where the real weights cannot go.

    python benchmarks/random_model.py FOLDER [--shape smollm2-135m]

Edit success means nothing on random weights; speed, memory, device placement and dtype paths
(bf16, float16) do not depend on the weights' values.
"""

from __future__ import annotations

import argparse

from harness.testing import build_tiny_model

#: transformers config values of real models (from their config.json).
SHAPES = {
    "smollm2-135m": {
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "max_position_embeddings": 8192,
        "vocab_size": 49152,
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="smollm2-135m")
    args = parser.parse_args()
    print(build_tiny_model(args.folder, "llama", **SHAPES[args.shape]))


if __name__ == "__main__":
    main()
