"""Finding plugins and what they register.

Every entry point of the `knowedit_harness` group is loaded on its own and every hook
implementation is called on its own, so a plugin that fails to import or raises while registering
is recorded (and shown by `harness list plugins`) while the others keep working. Built-in plugins
come through the very same entry points as third-party ones.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as metadata
import os
import re
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from types import ModuleType
from typing import Any

import pluggy

from harness import hookspecs
from harness.api import HarnessError

GROUP = "knowedit_harness"
DISABLE_ENV = "HARNESS_DISABLE_PLUGINS"

#: Component kinds, each with the hook that registers it.
KINDS: dict[str, str] = {
    "methods": "harness_register_methods",
    "tasks": "harness_register_tasks",
    "metrics": "harness_register_metrics",
    "models": "harness_register_models",
    "suites": "harness_register_suites",
}


@dataclass
class PluginInfo:
    """One plugin (an entry point, or an object registered directly) and how loading it went."""

    name: str
    distribution: str
    version: str
    status: str = "ok"  # "ok", "failed" or "disabled"
    error: str = ""
    hooks: list[str] = field(default_factory=list)


@dataclass
class Component:
    """A registered method, task, metric, model alias or suite."""

    kind: str
    name: str
    target: Any
    description: str
    plugin: PluginInfo
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        provider = " ".join(part for part in (self.plugin.distribution, self.plugin.version) if part)
        return f"plugin {self.plugin.name!r} ({provider})"

    def load(self) -> Any:
        """The registered object, importing it now if it was registered as "module:attribute"."""
        if not isinstance(self.target, str) or ":" not in self.target:
            return self.target
        module_name, _, attr = self.target.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except Exception as exc:
            raise HarnessError(
                f"{self.kind[:-1]} {self.name!r} from {self.origin} could not be loaded "
                f"from {self.target!r}: {type(exc).__name__}: {exc}"
            ) from exc
        return obj


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0].strip() if (text or "").strip() else ""


def _validation_message(exc: pluggy.PluginValidationError) -> str:
    """pluggy's message without the plugin object's repr, plus the hook probably meant."""
    message = re.sub(r" in plugin <.*>$", "", str(exc), flags=re.DOTALL)
    unknown = re.search(r"unknown hook '([^']+)'", message)
    close = difflib.get_close_matches(unknown.group(1), list(KINDS.values()), n=1) if unknown else []
    return message + (f" (did you mean {close[0]!r}?)" if close else "")


class Registry:
    """All components of all plugins, by kind and name."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.components: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
        self.conflicts: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}

    # -- loading ----------------------------------------------------------------------------

    def add_plugin(self, obj: object, info: PluginInfo) -> None:
        """Register one plugin object; a misspelt hook name fails this plugin only."""
        self.plugins[info.name] = info
        try:
            self.pm.register(obj, name=info.name)
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self._fail_registration(obj, info, _validation_message(exc))
            return
        except Exception as exc:
            self._fail_registration(obj, info, f"{type(exc).__name__}: {exc}")
            return
        info.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(obj) or ())

    def _fail_registration(self, obj: object, info: PluginInfo, error: str) -> None:
        if self.pm.is_registered(obj):
            self.pm.unregister(obj)
        info.status, info.error = "failed", error

    def add_entry_point(self, ep: metadata.EntryPoint, disabled: Iterable[str] = ()) -> None:
        dist = getattr(ep, "dist", None)
        distribution = dist.metadata["Name"] if dist else "unknown"
        info = PluginInfo(
            name=ep.name if ep.name not in self.plugins else f"{distribution}.{ep.name}",
            distribution=distribution,
            version=dist.version if dist else "unknown",
        )
        if ep.name in disabled or info.distribution in disabled:
            info.status = "disabled"
            self.plugins[info.name] = info
            return
        try:
            obj = ep.load()
        except Exception as exc:
            info.status = "failed"
            info.error = f"{type(exc).__name__}: {exc}"
            info.hooks = []
            self.plugins[info.name] = info
            return
        self.add_plugin(obj, info)

    def collect(self) -> None:
        """Call every hook implementation on its own, recording failures against its plugin.

        What a hook registers is kept only if the hook returns normally, so a plugin that raises
        half-way leaves no half of its components behind.
        """
        for kind, hook_name in KINDS.items():
            caller = getattr(self.pm.hook, hook_name)
            for impl in caller.get_hookimpls():
                info = self.plugins[impl.plugin_name]
                staged: list[Component] = []
                try:
                    impl.function(register=self._register_callback(kind, info, staged))
                except Exception as exc:
                    info.status = "failed"
                    last = traceback.extract_tb(exc.__traceback__)[-1]
                    info.error = (
                        f"{hook_name} raised {type(exc).__name__}: {exc} "
                        f"({os.path.basename(last.filename)}:{last.lineno})"
                    )
                    continue
                for component in staged:
                    self._add(component)

    def _register_callback(self, kind: str, info: PluginInfo, staged: list[Component]) -> Callable[..., None]:
        def register(name: str, target: Any, *, description: str | None = None, **extra: Any) -> None:
            if description is None:
                description = (
                    _first_line(getattr(target, "__doc__", None)) if not isinstance(target, str) else ""
                )
            staged.append(Component(kind, name, target, description or "", info, extra))

        return register

    def _add(self, component: Component) -> None:
        """Add one component; a name that is already taken becomes a conflict naming both origins."""
        kind, name = component.kind, component.name
        existing = self.components[kind].get(name)
        if existing is None:
            self.components[kind][name] = component
            return
        self.conflicts[kind][name] = (
            f"{kind[:-1]} {name!r} is registered twice: by {existing.origin} and by {component.origin}"
        )

    # -- lookup -----------------------------------------------------------------------------

    def names(self, kind: str) -> list[str]:
        return sorted(set(self.components[kind]) | set(self.conflicts[kind]))

    def get(self, kind: str, name: str) -> Component:
        if name in self.conflicts[kind]:
            raise HarnessError(self.conflicts[kind][name])
        try:
            return self.components[kind][name]
        except KeyError:
            known = ", ".join(self.names(kind)) or "none"
            failed = [p.name for p in self.plugins.values() if p.status == "failed"]
            hint = f" (plugins that failed to load: {', '.join(failed)})" if failed else ""
            raise HarnessError(f"unknown {kind[:-1]} {name!r}; known {kind}: {known}{hint}") from None

    def load(self, kind: str, name: str) -> Any:
        return self.get(kind, name).load()

    def failures(self) -> list[PluginInfo]:
        return [p for p in self.plugins.values() if p.status == "failed"]


def disabled_plugins() -> set[str]:
    return {name.strip() for name in os.environ.get(DISABLE_ENV, "").split(",") if name.strip()}


def build_registry(extra_plugins: Iterable[tuple[str, ModuleType | object]] = ()) -> Registry:
    """A registry of every installed plugin, plus `extra_plugins` (name, object) given directly."""
    registry = Registry()
    disabled = disabled_plugins()
    for ep in sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name):
        registry.add_entry_point(ep, disabled)
    for name, obj in extra_plugins:
        registry.add_plugin(obj, PluginInfo(name=name, distribution="(direct)", version=""))
    registry.collect()
    return registry


@cache
def get_registry() -> Registry:
    """The process-wide registry of installed plugins, built once."""
    return build_registry()
