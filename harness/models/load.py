"""`load_model`: a model spec (plugin alias, local folder, GGUF file or Hugging Face id) to a handle.

Every kind of spec ends in the same folder loader, so tiny test models, converted GGUF files and hub
models go through one code path. Hub access is checked once, up front: an unreachable hub becomes
one clear error naming what to pass instead, not a cascade of retries inside transformers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from harness.ground import HarnessError
from harness.models.gguf import converted_folder
from harness.models.handle import ModelHandle
from harness.models.shape import check_location
from harness.models.tokenization import ensure_pad_token

#: Seconds to wait for the hub before declaring it unreachable.
HUB_TIMEOUT_S = 10


def resolve_device(device: str) -> torch.device:
    """`auto` picks CUDA when present; an explicit CUDA device without CUDA is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise HarnessError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise HarnessError(f"device {device!r} was asked for but CUDA is not available")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise HarnessError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    elif resolved.type != "cpu":
        raise HarnessError(f"unsupported device {device!r}; use auto, cpu, cuda or cuda:N")
    return resolved


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """float32 on CPU; bfloat16 on GPUs that support it, else float16."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        if device.type == "cpu":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    resolved = getattr(torch, dtype, None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise HarnessError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    return resolved


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _hub_folder(repo_id: str, trust_remote_code: bool) -> str:
    """A local snapshot folder of a hub model: from the cache when there, else downloaded."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"]
    if trust_remote_code:
        patterns.append("*.py")
    try:
        return snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True)
    except LocalEntryNotFoundError:
        pass
    advice = (
        "pass a local model folder or a GGUF file instead, or set HF_HUB_OFFLINE=1 with a Hugging Face "
        "cache that already holds this model"
    )
    if _hub_offline():
        raise HarnessError(
            f"model {repo_id!r} is not in the local Hugging Face cache (HF_HUB_OFFLINE is set); {advice}"
        )
    try:
        return snapshot_download(repo_id, allow_patterns=patterns, etag_timeout=HUB_TIMEOUT_S)
    except Exception as exc:
        raise HarnessError(
            f"model {repo_id!r} is neither a registered alias nor a local path, and the Hugging Face hub "
            f"could not provide it ({type(exc).__name__}: {exc}); {advice}"
        ) from None


def _locate(spec: str, trust_remote_code: bool, alias: tuple[str, str] | None) -> tuple[Path, str]:
    """The local folder holding the model `spec` names, and a description of where it came from."""
    location, source = alias if alias else (spec, spec)
    path = Path(location).expanduser()
    kind = check_location(location)
    if kind == "file":
        return converted_folder(path), source
    if kind == "folder":
        return path, source
    return Path(_hub_folder(location, trust_remote_code)), source


def _load_folder(
    folder: Path, *, dtype: torch.dtype, device_map: str | None, trust_remote_code: bool
) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise HarnessError(
                f"model {folder} runs its own code from the model files, which is off by default; "
                "pass --trust-remote-code (trust_remote_code=True) if you trust its authors"
            ) from None
        raise HarnessError(f"model {folder}: cannot read its config: {exc}") from None
    model = AutoModelForCausalLM.from_pretrained(
        folder, config=config, dtype=dtype, device_map=device_map, trust_remote_code=trust_remote_code
    )
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    return model, tokenizer


def load_model(
    spec: str | os.PathLike[str],
    *,
    device: str = "auto",
    dtype: torch.dtype | str | None = None,
    trust_remote_code: bool = False,
    device_map: str | None = None,
    verify: bool = False,
    alias: tuple[str, str] | None = None,
) -> ModelHandle:
    """Load a model for editing, in eval mode, with a pad token set.

    `device_map="auto"` spreads a model too large for one GPU over all of them (and the CPU); then
    `device` only decides the default dtype. `verify` turns on restore verification. `alias` is
    `(location, source)` when `spec` is a plugin-registered model alias, as the caller's registry
    resolves it (`registry.models.locate(spec)`); the handle keeps the alias as its name.
    """
    spec = str(spec)
    resolved = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, resolved)
    folder, source = _locate(spec, trust_remote_code, alias)
    model, tokenizer = _load_folder(
        folder, dtype=torch_dtype, device_map=device_map, trust_remote_code=trust_remote_code
    )
    if device_map is None:
        model.to(resolved)
    model.eval()
    ensure_pad_token(tokenizer)
    return ModelHandle(model, tokenizer, spec, source=source, verify=verify)
