"""What a run's numbers depend on beyond its config: software versions, plugins, the machine.

Recorded in manifest.json so that a result can be traced to the code and hardware that made it.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from harness import __version__
from harness.plugins import Registry

PACKAGES = ("torch", "transformers", "peft", "accelerate", "datasets", "lm-eval", "numpy")


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def versions(registry: Registry) -> dict[str, Any]:
    return {
        "harness": __version__,
        "python": platform.python_version(),
        "packages": {name: _package_version(name) for name in PACKAGES},
        "plugins": {
            p.name: {"distribution": p.distribution, "version": p.version, "status": p.status}
            for p in sorted(registry.plugins.values(), key=lambda p: p.name)
        },
    }


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "host": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "argv": sys.argv,
    }
    import torch

    info["torch_threads"] = torch.get_num_threads()
    if torch.cuda.is_available():
        info["cuda"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info
