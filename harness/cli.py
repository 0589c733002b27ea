"""The `harness` command. Subcommands live in harness/commands/ and are imported only when used,
so `harness --help` and `harness list` never pay for torch."""

from __future__ import annotations

import importlib
import sys

import click

from harness import __version__
from harness.api import HarnessError

#: name -> ("module:attribute" of the click command, one-line help shown by `harness --help`).
COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("harness.commands.list:command", "List plugins, methods, tasks, metrics, models, suites."),
    "validate": ("harness.commands.validate:command", "Check a data file or dataset spec."),
    "run": ("harness.commands.run:command", "Edit and evaluate: methods x tasks on a model."),
    "leaderboard": ("harness.commands.leaderboard:command", "Merge run results into one table."),
    "stats": ("harness.commands.stats:command", "Precompute second-moment statistics."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, _, attr = COMMANDS[name][0].partition(":")
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in sorted(COMMANDS)])


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
