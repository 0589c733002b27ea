"""The process settings lm-evaluation-harness must see before it (and `datasets`) first look.

`datasets` and `huggingface_hub` read their offline switches at import time, so setting the
environment afterwards changes nothing; in a harness run they are usually imported already (by
transformers, or by a task plugin). We therefore set the variables for modules yet to come and
also flip the switches on the modules already loaded. Without this an offline user waits about
23 s of retries per hub dataset before a ConnectionError.
"""

from __future__ import annotations

import functools
import os
import socket
import sys

from harness.cache import cache_dir
from harness.ground import HarnessError

INSTALL_HINT = "pip install 'knowedit-harness[lmeval]'"
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
#: The host whose reachability decides "online" when no offline variable is set.
PROBE_HOST = ("huggingface.co", 443)
_TRUE = {"1", "ON", "YES", "TRUE"}


class LmEvalMissingError(HarnessError):
    """lm-eval (or accelerate, which its HF backend imports) is not installed."""


def offline_requested() -> bool:
    """True when the user has said so through any of the variables the HF libraries honour."""
    return any(os.environ.get(name, "").upper() in _TRUE for name in OFFLINE_VARIABLES)


@functools.cache
def hub_unreachable() -> bool:
    """One short connection attempt per process; a machine without a route to the hub fails it
    at once (DNS), which is far cheaper than letting `datasets` retry for 23 s per dataset."""
    try:
        with socket.create_connection(PROBE_HOST, timeout=3):
            return False
    except OSError:
        return True


def go_offline() -> None:
    """Put the HF libraries in offline mode, whether or not they are imported yet."""
    for name in OFFLINE_VARIABLES:
        os.environ[name] = "1"
    hub_constants = sys.modules.get("huggingface_hub.constants")
    if hub_constants is not None:
        hub_constants.HF_HUB_OFFLINE = True
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None:
        datasets_config.HF_HUB_OFFLINE = True
        datasets_config.HF_DATASETS_OFFLINE = True


def prepare_environment(offline: bool | None = None) -> None:
    """Settle offline mode, telemetry and where lm-eval may write, before lm-eval is imported.

    `offline=None` decides by itself: offline when an offline variable is set or the hub cannot
    be reached. Local task data never needs the network; the download counter `datasets` pings
    for every load is turned off either way.
    """
    if offline is None:
        offline = offline_requested() or hub_unreachable()
    if offline:
        go_offline()
    os.environ["HF_UPDATE_DOWNLOAD_COUNTS"] = "0"
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None:
        datasets_config.HF_UPDATE_DOWNLOAD_COUNTS = False
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # lm-eval's request cache otherwise lands inside site-packages; we never enable it, but a
    # user's own lm-eval settings must not make it write there either.
    os.environ.setdefault("LM_HARNESS_CACHE_PATH", str(cache_dir("general") / "lm_eval_requests"))


def require_lmeval() -> str:
    """lm-eval's version, or a HarnessError that says how to install it."""
    try:
        import accelerate  # noqa: F401  (lm-eval's HF backend imports it at module level)
        import lm_eval
    except ImportError as exc:
        raise LmEvalMissingError(
            f"general-capability checks need lm-evaluation-harness ({exc.name} is not installed): "
            f"{INSTALL_HINT}"
        ) from exc
    return str(lm_eval.__version__)
