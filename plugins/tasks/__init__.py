"""Built-in tasks: the six KnowEdit datasets, more editing formats and the bundled sample."""

from harness import hookimpl

TASKS: dict[str, tuple[str, str, str]] = {}


@hookimpl
def harness_register_tasks(register):
    for name, (target, record_format, description) in TASKS.items():
        register(name, target, description=description, record_format=record_format)
