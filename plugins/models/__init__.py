"""Built-in model aliases."""

from harness import hookimpl


@hookimpl
def harness_register_models(register):
    pass
