"""Subcommands from plugins (`harness_register_commands`): listed by `harness --help` without being
imported, dispatched to when run, and a broken one fails alone."""

from __future__ import annotations

import json

import click
import pytest
from test_cli_list import run_main

import harness.plugins
from harness.api import hookimpl
from harness.plugins import build_registry, get_registry


@click.command("hello")
@click.option("--name", default="world")
def hello(name: str) -> None:
    """Say hello."""
    click.echo(f"hello {name}")


class Commands:
    """One working command, and three ways for a command to be broken."""

    @hookimpl
    def harness_register_commands(self, register):
        register("hello", hello, description="Say hello.")
        register("ghost", "knowedit_no_such_module:command", description="Never importable.")
        register("not-click", "json:dumps", description="Not a click command.")
        register("run", hello, description="Would shadow the harness's own run.")


class Raises:
    @hookimpl
    def harness_register_commands(self, register):
        register("half", hello)
        raise RuntimeError("boom while registering commands")


@pytest.fixture
def registry(request, monkeypatch):
    """The process registry, with the installed plugins and these two, until the test ends."""
    extra = [("commands", Commands()), ("raises", Raises())]
    monkeypatch.setattr(harness.plugins, "build_registry", lambda: build_registry(extra_plugins=extra))
    get_registry.cache_clear()
    request.addfinalizer(get_registry.cache_clear)
    return get_registry()


def test_stats_comes_from_the_rome_family_plugin(capsys) -> None:
    component = get_registry().get("commands", "stats")
    assert component.plugin.name == "builtin_rome_family"
    assert component.target == "harness_plugins.rome_family.command:command"
    code, out, _ = run_main(capsys, "stats", "--help")
    assert code == 0
    for option in ("--model", "--layers", "--corpus", "--samples", "--tokens", "--dtype", "--device"):
        assert option in out


def test_help_lists_plugin_commands_and_refuses_a_core_name(capsys, registry) -> None:
    code, out, _ = run_main(capsys, "--help")
    assert code == 0
    commands, _, refused = out.partition("Plugin commands refused:")
    for line in ("hello", "Say hello."), ("ghost", "Never importable."), ("stats", "second-moment"):
        assert all(part in commands for part in line)
    assert "run" in refused and "plugin 'commands'" in refused


def test_a_broken_command_fails_alone(capsys, registry) -> None:
    assert run_main(capsys, "hello", "--name", "plugins")[:2] == (0, "hello plugins\n")
    code, _, err = run_main(capsys, "ghost")
    assert code == 1
    assert err.startswith("harness: error: command 'ghost' from plugin 'commands'")
    assert "ModuleNotFoundError" in err
    code, _, err = run_main(capsys, "not-click")
    assert code == 1 and "which is not a click command" in err
    code, out, _ = run_main(capsys, "run", "--help")  # the harness's own command
    assert code == 0 and "--method" in out
    assert run_main(capsys, "stats", "--help")[0] == 0


def test_a_plugin_whose_command_hook_raises_is_listed_as_failed(capsys, registry) -> None:
    code, out, _ = run_main(capsys, "list", "plugins", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert code == 0
    assert rows["raises"]["status"] == "failed"
    assert "harness_register_commands raised RuntimeError" in rows["raises"]["error"]
    assert "half" not in registry.names("commands")
    assert run_main(capsys, "hello")[:2] == (0, "hello world\n")
