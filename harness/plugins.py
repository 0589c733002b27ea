"""Finding plugins, what they register, and handing it out checked.

Every entry point of the `knowedit_harness` group is loaded on its own and every hook
implementation is called on its own. Built-in plugins come through the very same entry points as
third-party ones.

One rule for a plugin that breaks: a problem costs the part of the plugin it touches, and marks the
plugin failed with a message that `harness list plugins` shows. A plugin that cannot be imported
registers nothing. A hook that raises registers nothing (no half of its components stays behind).
A hook with an unknown name (a misspelling) or with arguments its specification does not pass is
skipped. The plugin's other hooks still register. A function named `harness_*` without `@hookimpl`
is not a hook: it is ignored with a warning. A name registered twice is usable by nobody until one
of the two plugins is disabled; `harness list` says which and exits non-zero.

The registry is built once at the command layer (`get_registry`) and handed down. Code below
`harness/commands` never looks plugins up by itself. Each kind has a typed view (`registry.methods`,
`.tasks`, `.metrics`, `.models`, `.suites`, `.commands`) whose `load` checks the registered object
against what that kind promises, so a wrongly registered target fails in one place, naming plugin
and target; `Registry.check` does so for every target at once (`harness list plugins --check`).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as metadata
import inspect
import logging
import os
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Generic, NoReturn, TypeVar, cast

import pluggy

from harness import hookspecs
from harness.ground import HarnessError, Method, Metric, Task
from harness.tasks import is_spec_path, read_dataset_spec

GROUP = "knowedit_harness"
DISABLE_ENV = "HARNESS_DISABLE_PLUGINS"

log = logging.getLogger(__name__)

#: Component kinds, each with the hook that registers it.
KINDS: dict[str, str] = {
    "methods": "harness_register_methods",
    "tasks": "harness_register_tasks",
    "metrics": "harness_register_metrics",
    "models": "harness_register_models",
    "suites": "harness_register_suites",
    "commands": "harness_register_commands",
}


@dataclass
class PluginInfo:
    """One plugin (an entry point, or an object registered directly) and how loading it went.

    `errors` are the problems that cost the plugin some or all of its components (the plugin is
    "failed"); `warnings` are problems that cost nothing but probably mean a mistake.
    """

    name: str
    distribution: str
    version: str
    disabled: bool = False
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """ "disabled", "failed" (some or all of its components are missing) or "ok"."""
        return "disabled" if self.disabled else "failed" if self.errors else "ok"

    @property
    def error(self) -> str:
        return "; ".join(self.errors)


@dataclass
class Component:
    """A registered method, task, metric, model alias, suite or command."""

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

    @property
    def label(self) -> str:
        """`method 'rome' from plugin 'builtin_methods' (knowedit-harness 0.1.0)`, for messages."""
        return f"{self.kind[:-1]} {self.name!r} from {self.origin}"

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
                f"{self.label} could not be loaded from {self.target!r}: {type(exc).__name__}: {exc}"
            ) from exc
        return obj


@dataclass(frozen=True)
class CheckFailure:
    """A component that `Registry.check` could not load: whose it is and why."""

    plugin: str
    kind: str
    name: str
    message: str


T = TypeVar("T")


class Kind(Generic[T]):
    """The components of one kind: their names, the default, and `load`, which hands out the
    registered object checked against what the kind promises (`expect`), in this one place."""

    #: What a registered target must be, in words, for the message when it is not.
    expect: ClassVar[str] = "anything"

    def __init__(self, registry: Registry, kind: str) -> None:
        self.registry = registry
        self.kind = kind
        self.singular = kind[:-1]

    def names(self) -> list[str]:
        return sorted(set(self.registry.components[self.kind]) | set(self.registry.conflicts[self.kind]))

    def __contains__(self, name: object) -> bool:
        return name in self.registry.components[self.kind] or name in self.registry.conflicts[self.kind]

    def usable(self) -> list[Component]:
        """The components whose name is not taken twice, by name."""
        conflicts = self.registry.conflicts[self.kind]
        return [c for name, c in sorted(self.registry.components[self.kind].items()) if name not in conflicts]

    def get(self, name: str) -> Component:
        """The component registered as `name`; a HarnessError for an unknown or doubly taken name."""
        if name in self.registry.conflicts[self.kind]:
            raise HarnessError(self.registry.conflicts[self.kind][name])
        try:
            return self.registry.components[self.kind][name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            failed = [p.name for p in self.registry.failures()]
            hint = f" (plugins that failed to load: {', '.join(failed)})" if failed else ""
            raise HarnessError(
                f"unknown {self.singular} {name!r}{did_you_mean(name, self.names())}; "
                f"known {self.kind}: {known}{hint}"
            ) from None

    def load(self, name: str) -> T:
        """The object registered as `name` (imported now if registered lazily), checked."""
        component = self.get(name)
        return self.check(component, component.load())

    def check(self, component: Component, obj: Any) -> T:
        """`obj` as this kind's object, or a HarnessError (see `reject`)."""
        return cast(T, obj)

    def reject(self, component: Component, obj: Any) -> NoReturn:
        target = f" (from {component.target!r})" if isinstance(component.target, str) else ""
        raise HarnessError(f"{component.label} is registered as {obj!r}{target}, which is not {self.expect}")

    def default(self) -> str:
        """The name that a plugin registered with `default=True`: what the harness uses when the
        user names none. Exactly one usable component may be marked."""
        marked = [c for c in self.usable() if c.info.get("default") is True]
        if len(marked) == 1:
            return marked[0].name
        if not marked:
            raise HarnessError(
                f"no installed plugin marks a default {self.singular} (register(..., default=True)); "
                f"name one (`harness list {self.kind}`)"
            )
        which = ", ".join(f"{c.name!r} by {c.origin}" for c in marked)
        raise HarnessError(
            f"several {self.kind} are marked default: {which}; name one, or disable all but one of "
            f"these plugins with {DISABLE_ENV}=NAME"
        )


class MethodKind(Kind[type[Method]]):
    """Methods: a Method subclass each (the runner makes a fresh instance per job)."""

    expect = "a Method subclass"

    def check(self, component: Component, obj: Any) -> type[Method]:
        if inspect.isclass(obj) and issubclass(obj, Method):
            return obj
        self.reject(component, obj)


class MetricKind(Kind[Metric | type[Metric]]):
    """Metrics: a Metric subclass (instantiated by the evaluator with its options) or instance."""

    expect = "a Metric subclass or a Metric"

    def check(self, component: Component, obj: Any) -> Metric | type[Metric]:
        if isinstance(obj, Metric) or (inspect.isclass(obj) and issubclass(obj, Metric)):
            return obj
        self.reject(component, obj)


class TaskKind(Kind[Task]):
    """Tasks: a Task subclass (instantiated), a Task, or the path of a dataset spec file, which is
    read by the task registered for the spec's record format (`Task.from_spec`).

    Registration info the harness reads: `record_format` (the schema name the task's records
    follow; `harness validate` infers formats from it) and `field_mapping=True` (the task reads
    dataset specs that map the user's fields instead of naming a record format).
    """

    expect = "a Task subclass, a Task or the path of a dataset spec"

    def check(self, component: Component, obj: Any) -> Task:
        if inspect.isclass(obj) and issubclass(obj, Task):
            return obj()
        if isinstance(obj, Task):
            return obj
        if isinstance(obj, str | os.PathLike):
            task = self.from_spec(obj)
            if task.name != component.name:
                raise HarnessError(
                    f"dataset spec {obj} is named {task.name!r} but registered as {component.name!r}"
                )
            return task
        self.reject(component, obj)

    def resolve(self, name_or_spec_path: str | os.PathLike[str]) -> Task:
        """A registered task by name, or the task a dataset spec file (a path) describes."""
        if is_spec_path(name_or_spec_path):
            return self.from_spec(name_or_spec_path)
        return self.load(os.fspath(name_or_spec_path))

    def from_spec(self, path: str | os.PathLike[str]) -> Task:
        """The task of a dataset spec file: its files read by the task class of its format."""
        spec = read_dataset_spec(path)
        reader = self.reader(spec.record_format, spec.source)
        task = reader.from_spec(spec)
        if not isinstance(task, Task):
            raise HarnessError(f"{reader.__name__}.from_spec returned {task!r}, which is not a Task")
        if spec.chat_template:
            task.chat_template = True
        return task

    def formats(self) -> dict[str, list[str]]:
        """Record format -> the usable tasks registered for it, its canonical reader first (the
        task named after the format, as `zsre` for the `zsre` format), then by name."""
        formats: dict[str, list[str]] = {}
        for component in sorted(self.usable(), key=_canonical_first):
            if component.info.get("record_format"):
                formats.setdefault(str(component.info["record_format"]), []).append(component.name)
        return formats

    def reader(self, record_format: str | None, spec_file: str) -> type[Task]:
        """The task class that reads a dataset spec in `record_format`, or, for None, the one
        registered with `field_mapping=True` (records rewritten by the spec's `fields`)."""
        if record_format is not None:
            names = self.formats().get(record_format)
            if not names:
                known = ", ".join(sorted(self.formats())) or "none"
                raise HarnessError(
                    f"{spec_file}: at $.record_format: no installed task reads the format "
                    f"{record_format!r}; known formats: {known}"
                )
        else:
            mapped = sorted(
                (c for c in self.usable() if c.info.get("field_mapping") is True), key=_canonical_first
            )
            names = [c.name for c in mapped]
            if not names:
                raise HarnessError(
                    f"{spec_file}: at $.fields: no installed task reads field-mapped records "
                    "(a task registered with field_mapping=True)"
                )
        component = self.get(names[0])
        obj = component.load()
        cls = obj if inspect.isclass(obj) else type(obj)
        if not issubclass(cls, Task):
            self.reject(component, obj)
        return cls


def _canonical_first(component: Component) -> tuple[bool, str]:
    return (component.name != component.info.get("record_format"), component.name)


class ModelKind(Kind[Callable[[], Any]]):
    """Model aliases: a callable returning where the model is (a folder, a GGUF file or a Hugging
    Face id), called only when the alias is used. Info: `source` (shown, recorded in the manifest),
    `available` (a callable saying whether the files are there)."""

    expect = "a callable returning a model location"

    def check(self, component: Component, obj: Any) -> Callable[[], Any]:
        if callable(obj):
            return obj
        self.reject(component, obj)

    def check_spec(self, spec: str) -> None:
        """Refuse a model spec that can only be a misspelt alias: a bare name (no '/', see
        `harness.models.shape.Kind`) that is no registered alias, no file or folder here and no
        model in the local Hugging Face cache. Such a spec would otherwise reach the hub and fail
        there with a connection error; the HarnessError names the closest alias and the known ones.
        Nothing is loaded or called: the plan checks every run's model with it."""
        from harness.models.shape import in_hub_cache, location_kind

        if spec in self or location_kind(spec) != "bare name" or in_hub_cache(spec):
            return
        raise HarnessError(
            f"unknown model {spec!r}{did_you_mean(spec, self.names())}: it is no registered alias "
            f"(known aliases: {', '.join(self.names()) or 'none'}; `harness list models`), no file or "
            "folder here, and no Hugging Face hub id, which reads OWNER/NAME"
        )

    def locate(self, spec: str) -> tuple[str, str] | None:
        """`(location, source)` of a registered alias, or None when `spec` is not an alias (a path
        or a hub id, which the model loader takes as they are); a misspelt alias is refused
        (`check_spec`)."""
        if spec not in self:
            self.check_spec(spec)
            return None
        component = self.get(spec)
        location = str(self.load(spec)())
        return location, str(component.info.get("source", location))


class SuiteKind(Kind[Path]):
    """Suites: the path of a suite JSON file, or a callable returning one."""

    expect = "the path of a suite file (or a callable returning one)"

    def check(self, component: Component, obj: Any) -> Path:
        path = obj() if callable(obj) else obj
        if isinstance(path, str | os.PathLike):
            return Path(path)
        self.reject(component, obj)


class CommandKind(Kind[Any]):
    """CLI subcommands: a click command each (click is imported only to check one)."""

    expect = "a click command"

    def check(self, component: Component, obj: Any) -> Any:
        import click

        if isinstance(obj, click.Command):
            return obj
        self.reject(component, obj)


#: The view of each kind with a contract; a kind without one gets the unchecked `Kind`.
VIEWS: dict[str, type[Kind[Any]]] = {
    "methods": MethodKind,
    "tasks": TaskKind,
    "metrics": MetricKind,
    "models": ModelKind,
    "suites": SuiteKind,
    "commands": CommandKind,
}


def _spelling(name: str) -> str:
    """A name as near misses are compared: lower case, without '-', '_', '.' or spaces."""
    return "".join(c for c in name.lower() if c not in "-_. ")


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """` (did you mean 'rome'?)` for the known name closest to a misspelt `name`, or "" when none is
    close: the one wording of a near miss in every "unknown ..." message, whatever kind of name.

    Names are compared by difflib's ratio with case and separators ignored (`ft_l` finds `ft-l`),
    and a ratio of at least 0.75 counts as close: `smollm2-135` finds `smollm2-135m`, `rom` finds
    `rome`, `htlm` finds `html`, while a shared prefix alone (`fixture-nope`, `fixture-bios`) does
    not."""
    by_spelling = {_spelling(k): k for k in known}
    close = difflib.get_close_matches(_spelling(name), list(by_spelling), n=1, cutoff=0.75)
    return f" (did you mean {by_spelling[close[0]]!r}?)" if close else ""


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0].strip() if (text or "").strip() else ""


def _from_the_harness(function: object) -> bool:
    """Whether a function was imported from the harness (as `harness_home`), not written in a plugin."""
    module = getattr(function, "__module__", "") or ""
    return module == "harness" or module.startswith("harness.")


def _required_arguments(function: Callable[..., Any]) -> list[str]:
    """The arguments a hook implementation needs (pluggy passes only those it names)."""
    kinds = (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )
    parameters = inspect.signature(function).parameters.values()
    return [p.name for p in parameters if p.kind in kinds and p.default is inspect.Parameter.empty]


class _PluginManager(pluggy.PluginManager):
    """pluggy's manager, taking a plugin's hooks one by one: a hook with an unknown name or
    arguments its spec does not pass is left out and noted in `screened` (the plugin's other hooks
    still register), and a `harness_*` function without `@hookimpl` is noted as a warning."""

    def __init__(self) -> None:
        super().__init__(GROUP)
        self.add_hookspecs(hookspecs)
        self.screened: PluginInfo | None = None

    def _spec_names(self) -> list[str]:
        return [
            name for name, caller in vars(self.hook).items() if not name.startswith("_") and caller.has_spec()
        ]

    def parse_hookimpl_opts(self, plugin: object, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        info = self.screened
        if info is None or not name.startswith("harness_"):
            return opts
        function = getattr(plugin, name)
        if opts is None:
            if inspect.isroutine(function) and not _from_the_harness(function):
                info.warnings.append(
                    f"function {name!r} is not marked @hookimpl, so the harness ignores it"
                    f"{did_you_mean(name, self._spec_names()) if name not in self._spec_names() else ''}"
                )
            return None
        hook_name = opts.get("specname") or name
        caller = getattr(self.hook, hook_name, None)
        if caller is None or not caller.has_spec():
            info.errors.append(
                f"unknown hook {hook_name!r}, skipped{did_you_mean(hook_name, self._spec_names())}"
            )
            return None
        extra = sorted(set(_required_arguments(function)) - set(caller.spec.argnames))
        if extra:
            info.errors.append(
                f"hook {hook_name!r} asks for {', '.join(map(repr, extra))}, but the harness passes only "
                f"{', '.join(map(repr, caller.spec.argnames))}; skipped"
            )
            return None
        return opts


class Registry:
    """All components of all plugins, by kind and name, with a typed view per kind."""

    def __init__(self) -> None:
        self.pm = _PluginManager()
        self.plugins: dict[str, PluginInfo] = {}
        self.components: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
        self.conflicts: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}
        self.kinds: dict[str, Kind[Any]] = {kind: VIEWS.get(kind, Kind)(self, kind) for kind in KINDS}

    @property
    def methods(self) -> MethodKind:
        return cast(MethodKind, self.kinds["methods"])

    @property
    def tasks(self) -> TaskKind:
        return cast(TaskKind, self.kinds["tasks"])

    @property
    def metrics(self) -> MetricKind:
        return cast(MetricKind, self.kinds["metrics"])

    @property
    def models(self) -> ModelKind:
        return cast(ModelKind, self.kinds["models"])

    @property
    def suites(self) -> SuiteKind:
        return cast(SuiteKind, self.kinds["suites"])

    @property
    def commands(self) -> CommandKind:
        return cast(CommandKind, self.kinds["commands"])

    # -- loading ----------------------------------------------------------------------------

    def add_plugin(self, obj: object, info: PluginInfo) -> None:
        """Register one plugin object, hook by hook (see the module docstring for what a broken
        hook costs)."""
        self.plugins[info.name] = info
        self.pm.screened = info
        try:
            self.pm.register(obj, name=info.name)
        except Exception as exc:
            if self.pm.is_registered(obj):
                self.pm.unregister(obj)
            info.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            self.pm.screened = None
        info.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(obj) or ())
        for warning in info.warnings:
            log.warning("plugin %r: %s", info.name, warning)

    def add_entry_point(self, ep: metadata.EntryPoint, disabled: Iterable[str] = ()) -> None:
        dist = getattr(ep, "dist", None)
        distribution = dist.metadata["Name"] if dist else "unknown"
        info = PluginInfo(
            name=ep.name if ep.name not in self.plugins else f"{distribution}.{ep.name}",
            distribution=distribution,
            version=dist.version if dist else "unknown",
        )
        if ep.name in disabled or info.distribution in disabled:
            info.disabled = True
            self.plugins[info.name] = info
            return
        try:
            obj = ep.load()
        except Exception as exc:
            info.errors.append(f"{type(exc).__name__}: {exc}")
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
                    last = traceback.extract_tb(exc.__traceback__)[-1]
                    info.errors.append(
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
        """Add one component; a name that is already taken becomes a conflict naming both origins
        and the setting that resolves it."""
        kind, name = component.kind, component.name
        existing = self.components[kind].get(name)
        if existing is None:
            self.components[kind][name] = component
            return
        first, second = existing.plugin.name, component.plugin.name
        self.conflicts[kind][name] = (
            f"{kind[:-1]} {name!r} is registered twice: by {existing.origin} and by {component.origin}; "
            f"disable one of the two plugins: {DISABLE_ENV}={second} or {DISABLE_ENV}={first}"
        )

    # -- lookup -----------------------------------------------------------------------------

    def names(self, kind: str) -> list[str]:
        return self.kinds[kind].names()

    def get(self, kind: str, name: str) -> Component:
        return self.kinds[kind].get(name)

    def load(self, kind: str, name: str) -> Any:
        """The checked object of one component (`registry.methods.load(name)` and so on)."""
        return self.kinds[kind].load(name)

    def failures(self) -> list[PluginInfo]:
        return [p for p in self.plugins.values() if p.status == "failed"]

    def conflict_messages(self) -> list[str]:
        return [message for kind in KINDS for _, message in sorted(self.conflicts[kind].items())]

    def check(self) -> list[CheckFailure]:
        """Load every usable component, importing every lazy "module:attribute" target and checking
        it against its kind: what `harness list plugins --check` reports (before a run would)."""
        failures = []
        for kind, view in self.kinds.items():
            for component in view.usable():
                try:
                    view.check(component, component.load())
                except Exception as exc:
                    message = (
                        str(exc)
                        if isinstance(exc, HarnessError)
                        else f"{component.label}: {type(exc).__name__}: {exc}"
                    )
                    failures.append(CheckFailure(component.plugin.name, kind, component.name, message))
        return failures


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
    """The process-wide registry of installed plugins, built once. Only the command layer (and
    tests) call it; everything below is handed the registry it should use."""
    return build_registry()
