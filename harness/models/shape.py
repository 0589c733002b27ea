"""What a model spec points at, and a model's shape read before (or instead of) loading it.

A run's plan refuses a layer hyperparameter beyond the model's depth without loading any weights,
and `harness list methods NAME --model M` shows a method's model-dependent defaults from a weightless
skeleton of the model. Only what is on this machine is read: a folder's config.json, a GGUF file
(its cached conversion when an earlier load made one, else its header), or the config of a hub
model already in the Hugging Face cache. Whatever cannot be read that way is left to loading
(`harness.models.load`), so nothing here downloads. This module imports neither torch nor
transformers until it reads a config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from harness.ground import HarnessError
from harness.models.adapters import config_num_layers

if TYPE_CHECKING:
    from harness.models.handle import ModelHandle

#: What a model location (an alias's location, or the spec itself) names, before anything loads:
#: a file or folder on this machine; a path that is not there; a hub id `OWNER/NAME`; or a bare
#: `NAME`, which is no path here and no current hub id (the hub's owner-less legacy ids, such as
#: `gpt2`, are used only from the local Hugging Face cache).
Kind = Literal["file", "folder", "missing path", "hub id", "bare name"]


def location_kind(location: str | os.PathLike[str]) -> Kind:
    """The kind of a model location (see `Kind`); the loader and the plan read a spec by this one
    rule."""
    location = os.fspath(location)
    path = Path(location).expanduser()
    if path.is_file():
        return "file"
    if path.is_dir():
        return "folder"
    if path.is_absolute() or location.startswith((".", "~")) or location.count("/") > 1:
        return "missing path"
    return "hub id" if "/" in location else "bare name"


def check_location(location: str | os.PathLike[str]) -> Kind:
    """The kind of a model location, refusing one that cannot hold a model whatever happens next:
    a path that does not exist, a file that is no GGUF file, a folder without config.json. The
    plan (before anything loads) and the loader refuse with the same words."""
    kind = location_kind(location)
    path = Path(location).expanduser()
    if kind == "file" and path.suffix != ".gguf":
        raise HarnessError(
            f"model file {path} is not a GGUF file; pass a model folder, a .gguf file or a hub id"
        )
    if kind == "folder" and not (path / "config.json").is_file():
        raise HarnessError(f"model folder {path} has no config.json")
    if kind == "missing path":
        raise HarnessError(f"model path {os.fspath(location)} does not exist")
    return kind


def in_hub_cache(repo_id: str) -> bool:
    """Whether the local Hugging Face cache holds the config of hub model `repo_id` (no network)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def _config_folder(location: str) -> Path | None:
    """The local folder holding `location`'s config.json: the folder itself, the cached conversion
    of a GGUF file, or the cached snapshot of a hub id."""
    from huggingface_hub import try_to_load_from_cache

    from harness.models.gguf import cached_conversion

    kind = location_kind(location)
    path = Path(location).expanduser()
    if kind == "folder":
        return path
    if kind == "file":
        return cached_conversion(path)
    if kind in ("hub id", "bare name"):
        cached = try_to_load_from_cache(location, "config.json")
        return Path(cached).parent if isinstance(cached, str) else None
    return None


def read_config(location: str | os.PathLike[str]) -> Any | None:
    """The transformers config of the model at `location` (a model folder, a GGUF file or a hub
    id), or None when it is not readable without loading or downloading (a remote-code model, a
    hub model not in the cache, a path that does not exist: loading reports those itself). A GGUF
    file not converted yet is read from its header, which takes seconds."""
    location = os.fspath(location)
    path = Path(location).expanduser()
    try:
        from transformers import AutoConfig

        folder = _config_folder(location)
        if folder is not None and (folder / "config.json").is_file():
            return AutoConfig.from_pretrained(folder)
        if path.is_file() and path.suffix == ".gguf":
            return AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
        return None
    except (OSError, ValueError, KeyError):  # an unreadable config is the loader's to report
        return None


def count_layers(location: str | os.PathLike[str]) -> int | None:
    """The number of layers of the model at `location`, or None when its config is not readable
    here (see `read_config`)."""
    config = read_config(location)
    if config is None:
        return None
    return config_num_layers(config) or None


def weightless_handle(location: str | os.PathLike[str], name: str) -> ModelHandle | None:
    """A handle on the model at `location` built from its config alone, on PyTorch's meta device
    (no weights, no tokenizer: `handle.tokenizer` is None), or None when the config is not readable
    here. Its adapter is the loaded model's (family, depth, widths), which is all that
    `Method.default_hparams` is meant to read; anything that needs weights fails on it."""
    config = read_config(location)
    if config is None:
        return None
    import torch
    from transformers import AutoModelForCausalLM

    from harness.models.handle import ModelHandle

    if hasattr(config, "quantization_config"):  # a GGUF config: the skeleton is a plain model
        del config.quantization_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return ModelHandle(model, None, name, source=os.fspath(location))  # type: ignore[arg-type]


#: Files in which transformers saves a tokenizer's chat template besides tokenizer_config.json.
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


def has_chat_template(location: str | os.PathLike[str]) -> bool | None:
    """Whether the tokenizer of the model at `location` has a chat template, read from its files
    without loading anything (tokenizer_config.json's `chat_template`, a chat_template.jinja or
    .json file beside it, a GGUF header's `tokenizer.chat_template`, which takes seconds), or
    None when its tokenizer files are not readable here (a hub model not in the cache): the
    evaluator then refuses a tokenizer without one when the model loads."""
    import json

    location = os.fspath(location)
    path = Path(location).expanduser()
    try:
        folder = _config_folder(location)
        if folder is not None and (folder / "tokenizer_config.json").is_file():
            if any((folder / name).is_file() for name in CHAT_TEMPLATE_FILES):
                return True
            return bool(json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template"))
        if path.is_file() and path.suffix == ".gguf":
            from gguf import GGUFReader

            return "tokenizer.chat_template" in GGUFReader(path).fields
    except (OSError, ValueError):  # unreadable files are the loader's to report
        return None
    return None
