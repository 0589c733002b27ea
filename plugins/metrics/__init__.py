"""Built-in metrics (definitions in docs/metrics.md), registered lazily."""

from harness import hookimpl

METRICS: dict[str, tuple[str, str]] = {}


@hookimpl
def harness_register_metrics(register):
    for name, (target, description) in METRICS.items():
        register(name, target, description=description)
