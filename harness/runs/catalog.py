"""The runner's one door to plugins: methods, tasks, metrics and suites by name.

Going through a `Catalog` rather than the process-wide registry lets a test (or an embedding
application) run the real planner and executor over a registry built with extra plugins.
"""

from __future__ import annotations

import inspect
from functools import cache
from typing import Any

from harness.api import HarnessError, Method, Task
from harness.plugins import Registry, get_registry
from harness.runs.suites import Suite, load_suite


class Catalog:
    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry if registry is not None else get_registry()
        self._tasks: dict[str, Task] = {}
        self.method_class = cache(self._method_class)

    def _method_class(self, name: str) -> type[Method]:
        target = self.registry.load("methods", name)
        if not (inspect.isclass(target) and issubclass(target, Method)):
            raise HarnessError(f"method {name!r} is registered as {target!r}, which is not a Method subclass")
        return target

    def method(self, name: str) -> Method:
        """A fresh method instance: a job's `fit` state never leaks into the next job."""
        return self.method_class(name)()

    def task(self, name: str) -> Task:
        if name not in self._tasks:
            self._tasks[name] = self._resolve_task(name)
        return self._tasks[name]

    def _resolve_task(self, name: str) -> Task:
        from harness.tasks import is_spec_path, resolve_task

        if is_spec_path(name):
            return resolve_task(name)
        target = self.registry.load("tasks", name)
        task = target() if inspect.isclass(target) else target
        if not isinstance(task, Task):
            raise HarnessError(f"task {name!r} is registered as {target!r}, which is not a Task")
        return task

    def task_splits(self, name: str) -> tuple[str, ...]:
        return tuple(self.task(name).splits)

    def metric(self, name: str) -> Any:
        target = self.registry.load("metrics", name)
        return target() if inspect.isclass(target) else target

    def suite(self, name: str) -> Suite:
        component = self.registry.get("suites", name)
        target = component.load()
        path = target() if callable(target) else target
        suite = load_suite(path)
        if suite.name != name:
            raise HarnessError(f"suite file {path} is named {suite.name!r} but registered as {name!r}")
        return suite
