"""Built-in suites: `knowedit` and `knowedit-mini`."""

from harness import hookimpl


@hookimpl
def harness_register_suites(register):
    pass
