"""The runner's one door to plugins: methods, tasks, metrics and suites by name.

A `Catalog` is made over the registry the command layer built and handed down (a test or an
embedding application builds one with extra plugins), so the planner and executor never look
plugins up by themselves. What a name stands for is checked by the registry's typed views; the
catalog adds what a run needs on top: fresh method instances, tasks read once, parsed suites.
"""

from __future__ import annotations

import os
from functools import cache

from harness.ground import HarnessError, Method, Task
from harness.plugins import Registry
from harness.runs.suites import Suite, load_suite
from harness.tasks import is_spec_path


class Catalog:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._tasks: dict[str, Task] = {}
        #: A dataset spec's name -> its file, so that two specs cannot share a name.
        self._spec_files: dict[str, str] = {}
        #: name -> the Method subclass, loaded and checked once.
        self.method_class = cache(registry.methods.load)

    def method(self, name: str) -> Method:
        """A fresh method instance: a job's `fit` state never leaks into the next job."""
        return self.method_class(name)()

    def task(self, name: str) -> Task:
        """A registered task by name, or the task of a dataset spec path; each resolved once. A
        spec's task is from then on also known by the spec's `name` (`task_name`)."""
        if name not in self._tasks:
            task = self.registry.tasks.resolve(name)
            if is_spec_path(name):
                self._file_spec(name, task)
            self._tasks[name] = task
        return self._tasks[name]

    def task_name(self, name_or_path: str) -> str:
        """The name a task's results, tables and job keys are filed under: a dataset spec's own
        `name` (not its path), or the registered name."""
        return self.task(name_or_path).name if is_spec_path(name_or_path) else name_or_path

    def _file_spec(self, path: str, task: Task) -> None:
        """Make a spec's task known by its name, which must not be another task's."""
        where = os.path.realpath(path)
        if task.name in self.registry.tasks:
            raise HarnessError(
                f"dataset spec {path} is named {task.name!r}, like a registered task; its results "
                "would be filed with that task's: give the spec another name"
            )
        other = self._spec_files.setdefault(task.name, where)
        if other != where:
            raise HarnessError(
                f"dataset specs {other} and {path} are both named {task.name!r}; results are filed by "
                "name, so give each spec its own"
            )
        self._tasks[task.name] = task

    def task_splits(self, name: str) -> tuple[str, ...]:
        return tuple(self.task(name).splits)

    def suite(self, name: str) -> Suite:
        path = self.registry.suites.load(name)
        suite = load_suite(path)
        if suite.name != name:
            raise HarnessError(f"suite file {path} is named {suite.name!r} but registered as {name!r}")
        return suite
