"""The hooks a plugin may implement. Each is handed a `register` callback, so one plugin can
register any number of components and the harness keeps track of who registered what."""

import pluggy

hookspec = pluggy.HookspecMarker("knowedit_harness")


@hookspec
def harness_register_methods(register):
    """Register editing methods: `register(name, target, description=...)`.

    `target` is a Method subclass, or a "module:attribute" string imported only when the method is
    used, so that listing methods never imports torch.
    """


@hookspec
def harness_register_tasks(register):
    """Register tasks: `register(name, target, description=..., record_format=...)`."""


@hookspec
def harness_register_metrics(register):
    """Register metrics: `register(name, target, description=...)`."""


@hookspec
def harness_register_models(register):
    """Register model aliases: `register(name, target, description=..., source=...)`.

    `target` is a callable (or "module:attribute" string) returning a local folder, a GGUF file or
    a Hugging Face id; it is called only when the alias is loaded.
    """


@hookspec
def harness_register_suites(register):
    """Register suites: `register(name, target, description=...)`, where `target` is the path of
    a suite JSON file (validated by schemas/suite.schema.json) or a "module:attribute" string
    returning one."""
