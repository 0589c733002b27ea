"""Fail when the environment holds a CUDA build of torch or any NVIDIA/CUDA package.

The README's install line must not pull the CUDA build of torch (about 3 GB of `nvidia-*` wheels)
onto a machine without a GPU, which a plain `pip install torch` on Linux does, directly or through
a dependency that asks for a newer torch than the one installed. CI runs on such a machine, so after
installing everything the README installs, this looks at what pip actually resolved.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys

#: Distributions that only a CUDA build brings: NVIDIA's runtime wheels and torch's GPU compiler.
GPU_ONLY = re.compile(r"^(nvidia[-_].*|.*cuda.*|triton)$", re.IGNORECASE)


def gpu_packages() -> list[str]:
    """Installed distributions whose name marks them as CUDA-only, as "name version"."""
    found = {
        (dist.metadata["Name"], dist.version)
        for dist in importlib.metadata.distributions()
        if GPU_ONLY.match(dist.metadata["Name"] or "")
    }
    return [f"{name} {version}" for name, version in sorted(found)]


def main() -> int:
    import torch

    problems = gpu_packages()
    if torch.version.cuda is not None:
        problems.insert(0, f"torch {torch.__version__} is a CUDA build (CUDA {torch.version.cuda})")
    if problems:
        print("CUDA packages on a CPU-only install:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"CPU-only: torch {torch.__version__}, no nvidia-*/CUDA package")
    return 0


if __name__ == "__main__":
    sys.exit(main())
