"""The runner's one door to plugins: methods, tasks, metrics and suites by name.

A `Catalog` is made over the registry the command layer built and handed down (a test or an
embedding application builds one with extra plugins), so the planner and executor never look
plugins up by themselves. What a name stands for is checked by the registry's typed views; the
catalog adds what a run needs on top: fresh method instances, tasks read once, parsed suites.
"""

from __future__ import annotations

from functools import cache

from harness.ground import HarnessError, Method, Task
from harness.plugins import Registry
from harness.runs.suites import Suite, load_suite


class Catalog:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._tasks: dict[str, Task] = {}
        #: name -> the Method subclass, loaded and checked once.
        self.method_class = cache(registry.methods.load)

    def method(self, name: str) -> Method:
        """A fresh method instance: a job's `fit` state never leaks into the next job."""
        return self.method_class(name)()

    def task(self, name: str) -> Task:
        """A registered task by name, or the task of a dataset spec path; each resolved once."""
        if name not in self._tasks:
            self._tasks[name] = self.registry.tasks.resolve(name)
        return self._tasks[name]

    def task_splits(self, name: str) -> tuple[str, ...]:
        return tuple(self.task(name).splits)

    def suite(self, name: str) -> Suite:
        path = self.registry.suites.load(name)
        suite = load_suite(path)
        if suite.name != name:
            raise HarnessError(f"suite file {path} is named {suite.name!r} but registered as {name!r}")
        return suite
