"""knowedit-harness: evaluate knowledge edits of language models, with methods, tasks and metrics
as plugins."""

from importlib.metadata import PackageNotFoundError, version

import pluggy

try:
    __version__ = version("knowedit-harness")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

#: Decorator for plugin hook implementations: `@harness.hookimpl`.
hookimpl = pluggy.HookimplMarker("knowedit_harness")

__all__ = ["__version__", "hookimpl"]
