"""A model's number of layers, read before the model loads, so that a run's plan can refuse a
layer hyperparameter beyond the model's depth without loading any weights.

Only what is on this machine is read: a folder's config.json, a GGUF file's header, or the config
of a hub model already in the Hugging Face cache. Whatever cannot be read that way is left to the
check after loading (`harness.hparams.resolve_hparams`), so planning never downloads anything.
This module imports neither torch nor transformers until it reads a config.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.models.adapters import config_num_layers


def _gguf_layers(path: Path) -> int | None:
    """`<architecture>.block_count` of a GGUF header, which transformers maps to num_hidden_layers."""
    from gguf import GGUFReader

    fields = GGUFReader(path).fields
    architecture = fields.get("general.architecture")
    count = fields.get(f"{architecture.contents()}.block_count") if architecture else None
    return int(count.contents()) if count else None


def _config_folder(location: str) -> Path | None:
    """The local folder holding `location`'s config.json: the folder itself, or the cached
    snapshot of a hub id."""
    path = Path(location).expanduser()
    if path.is_dir():
        return path
    if path.is_absolute() or location.startswith((".", "~")) or location.count("/") != 1:
        return None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(location, "config.json")
    return Path(cached).parent if isinstance(cached, str) else None


def count_layers(location: str | os.PathLike[str]) -> int | None:
    """The number of layers of the model at `location` (a model folder, a GGUF file or a hub id),
    or None when it is not knowable without loading or downloading (a remote-code model, a hub
    model not in the cache, a path that does not exist: loading reports those itself)."""
    location = os.fspath(location)
    path = Path(location).expanduser()
    try:
        if path.is_file() and path.suffix == ".gguf":
            return _gguf_layers(path)
        folder = _config_folder(location)
        if folder is None or not (folder / "config.json").is_file():
            return None
        from transformers import AutoConfig

        return config_num_layers(AutoConfig.from_pretrained(folder)) or None
    except (OSError, ValueError, KeyError):  # an unreadable config is the loader's to report
        return None
