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
    """Register tasks: `register(name, target, description=..., record_format=...)`.

    `target` is a Task subclass, a Task, the path of a dataset spec file, or a "module:attribute"
    string naming one of these. `record_format` is the schema name its records follow (format
    inference of `harness validate`, and dataset specs naming that format, use it);
    `field_mapping=True` marks the task that reads dataset specs with a `fields` mapping.
    """


@hookspec
def harness_register_metrics(register):
    """Register metrics: `register(name, target, description=...)`."""


@hookspec
def harness_register_models(register):
    """Register model aliases: `register(name, target, description=..., source=...)`.

    `target` is a callable (or "module:attribute" string) returning a local folder, a GGUF file or
    a Hugging Face id; it is called only when the alias is loaded. `default=True` makes the alias
    the model of a run that names none (one alias of all installed plugins may say so).
    """


@hookspec
def harness_register_suites(register):
    """Register suites: `register(name, target, description=...)`, where `target` is the path of
    a suite JSON file (validated by schemas/suite.schema.json) or a "module:attribute" string
    returning one. `default=True` makes the suite what `harness run` runs when given no suite,
    method or task (one suite of all installed plugins may say so)."""


@hookspec
def harness_register_commands(register):
    """Register CLI subcommands: `register(name, target, description=...)`, where `target` is a
    `click.Command` or a "module:attribute" string naming one, imported only when the command runs,
    so that `harness --help` (which lists the name and description) stays fast. A name the harness
    itself uses for a command is refused; a command that fails to load fails on its own."""
