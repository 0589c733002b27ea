"""The `harness` command. Its own subcommands live in harness/commands/, plugins add theirs through
the `harness_register_commands` hook, and every one is imported only when it runs, so
`harness --help` and `harness list` never pay for torch."""

from __future__ import annotations

import importlib
import sys

import click

from harness import __version__
from harness.ground import HarnessError

#: The harness's own commands: name -> ("module:attribute" of the click command, one-line help shown
#: by `harness --help`). A plugin may not take one of these names.
COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("harness.commands.list:command", "List plugins, methods, tasks, metrics, models, suites."),
    "validate": ("harness.commands.validate:command", "Check a data file or dataset spec."),
    "run": ("harness.commands.run:command", "Edit and evaluate: methods x tasks on a model."),
    "leaderboard": ("harness.commands.leaderboard:command", "Merge run results into one table."),
    "train": ("harness.commands.train:command", "Train a method's editor on a train split (MEND, SERAC)."),
}


def _plugin_commands() -> dict[str, str]:
    """Every command name plugins register -> its one-line help (for a name two plugins claim, the
    error that says so; for a core command's name, why it is refused)."""
    from harness.plugins import get_registry

    commands = get_registry().commands
    listed = {}
    for name in commands.names():
        try:
            component = commands.get(name)
        except HarnessError as exc:
            listed[name] = str(exc)
            continue
        listed[name] = (
            f"refused: the harness has its own {name!r} command ({component.origin})"
            if name in COMMANDS
            else component.description
        )
    return listed


def _load_plugin_command(name: str) -> click.Command | None:
    """The click command a plugin registered under `name`, imported now; None for no such command.
    A command that fails to load, or is no click command, is an error of that command alone, naming
    its plugin."""
    from harness.plugins import get_registry

    commands = get_registry().commands
    return commands.load(name) if name in commands else None


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *_plugin_commands()})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return _load_plugin_command(name)
        module_name, _, attr = COMMANDS[name][0].partition(":")
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        plugin = _plugin_commands()
        listed = {name: summary for name, (_, summary) in COMMANDS.items()}
        listed.update({name: summary for name, summary in plugin.items() if name not in COMMANDS})
        with formatter.section("Commands"):
            formatter.write_dl(sorted(listed.items()))
        refused = sorted((name, summary) for name, summary in plugin.items() if name in COMMANDS)
        if refused:
            with formatter.section("Plugin commands refused"):
                formatter.write_dl(refused)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="harness")
def cli() -> None:
    """Evaluate knowledge edits of language models: methods, tasks and metrics are plugins."""


def main(argv: list[str] | None = None) -> None:
    try:
        # Without standalone mode click returns, rather than raises, the code of `ctx.exit(code)`.
        code = cli.main(args=argv, prog_name="harness", standalone_mode=False)
    except HarnessError as exc:
        click.echo(f"harness: error: {exc}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("harness: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
