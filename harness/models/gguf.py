"""Converting a GGUF file once into a cached safetensors folder.

transformers de-quantizes GGUF on every load (about 35 s for SmolLM2-135M on two cores), and the
de-quantized model refuses `save_pretrained` because its config still carries the GGUF
quantization config. So the weights are moved into a plain model built from the same config
without it, and saved; every later load reads the safetensors in about a second.
"""

from __future__ import annotations

from pathlib import Path

from harness.cache import ArtifactCache, content_key

#: The artifact cache of converted models.
CONVERSIONS = ArtifactCache("models")


def _conversion_key(gguf_path: Path) -> str:
    """The cache key of a GGUF file's conversion: the file's resolved path, size and modification
    time and transformers' version."""
    import transformers

    stat = gguf_path.stat()
    key = content_key(
        "gguf", str(gguf_path.resolve()), stat.st_size, stat.st_mtime_ns, transformers.__version__
    )
    return f"{gguf_path.stem}-{key[:16]}"


def converted_folder(gguf_path: Path) -> Path:
    """The cache folder of a GGUF file's conversion, converting it first if it is not there yet.

    The folder is built privately and renamed into place (`ArtifactCache.folder`), so processes
    converting the same file at once never read each other's half-written output."""
    return CONVERSIONS.folder(_conversion_key(gguf_path), lambda out: _convert(gguf_path, out))


def cached_conversion(gguf_path: Path) -> Path | None:
    """The cache folder of a GGUF file's conversion when an earlier load made it, else None (it
    converts nothing): where its config.json can be read in milliseconds."""
    folder = CONVERSIONS.root / _conversion_key(gguf_path)
    return folder if folder.is_dir() else None


def _convert(gguf_path: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
