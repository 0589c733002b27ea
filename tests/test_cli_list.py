"""`harness --help` and `harness list`: what they show, and that they stay light (no torch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from cli_helpers import run_main
from fixtures import PLUGIN_SITE, use_fixture_plugins

from harness.cli import COMMANDS


def harness_subprocess(code: str, *, with_fixtures: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("HARNESS_DISABLE_PLUGINS", None)
    if with_fixtures:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGIN_SITE), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture
def registry(request, monkeypatch):
    return use_fixture_plugins(request, monkeypatch)


def test_help_lists_every_command(capsys):
    code, out, _ = run_main(capsys, "--help")
    assert code == 0
    for name, (_, summary) in COMMANDS.items():
        assert name in out and summary in out


def test_list_plugins_shows_failures_with_their_error(capsys, registry):
    code, out, _ = run_main(capsys, "list", "plugins")
    assert code == 1  # fixture-facts is registered twice (see below)
    lines = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert "failed" in lines["fixture_broken"] and "No module named" in lines["fixture_broken"]
    assert "boom while registering" in lines["fixture_raises"]
    assert "ok" in lines["fixture_good"] and "knowedit-fixture-plugins" in lines["fixture_good"]
    assert " 1.0 " in lines["fixture_good"]


def test_list_plugins_json_has_every_field(capsys, registry):
    code, out, _ = run_main(capsys, "list", "plugins", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert code == 1
    assert rows["fixture_good"] == {
        "name": "fixture_good",
        "distribution": "knowedit-fixture-plugins",
        "version": "1.0",
        "status": "ok",
        "hooks": "harness_register_methods, harness_register_tasks",
        "error": "",
        "warning": "",
    }
    assert rows["fixture_misspelt"]["status"] == "failed"


def test_list_tasks_json_shows_provider_description_and_conflicts(capsys, registry):
    code, out, _ = run_main(capsys, "list", "tasks", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert code == 1
    assert rows["fixture-bios"]["distribution"] == "knowedit-fixture-plugins"
    assert rows["fixture-bios"]["description"] == "Biographies in the fixture format (person, biography)."
    assert rows["fixture-bios"]["record_format"] == "fixture-bios"
    assert "registered twice" in rows["fixture-facts"]["error"]


def test_a_name_registered_twice_fails_every_listing_naming_the_plugin_to_disable(capsys, registry):
    for what in ("plugins", "methods", "tasks"):
        code, _, err = run_main(capsys, "list", what)
        assert code == 1
        assert err.splitlines() == [
            "harness: error: task 'fixture-facts' is registered twice: by plugin 'fixture_dup' "
            "(knowedit-fixture-dup 2.0) and by plugin 'fixture_good' (knowedit-fixture-plugins 1.0); "
            "disable one of the two plugins: "
            "HARNESS_DISABLE_PLUGINS=fixture_good or HARNESS_DISABLE_PLUGINS=fixture_dup"
        ]


def test_list_without_conflicts_exits_zero_even_with_failed_plugins(capsys, request, monkeypatch):
    use_fixture_plugins(request, monkeypatch, disabled=("fixture_dup",))
    code, out, err = run_main(capsys, "list", "plugins")
    assert (code, err) == (0, "")
    assert "fixture_broken" in out


def test_list_plugins_shows_an_unmarked_hook_as_a_warning(capsys, registry):
    _, out, _ = run_main(capsys, "list", "plugins", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["fixture_unmarked"]["status"] == "ok"
    assert rows["fixture_unmarked"]["warning"] == (
        "function 'harness_register_suites' is not marked @hookimpl, so the harness ignores it"
    )
    _, table, _ = run_main(capsys, "list", "plugins")
    assert "warning" in table.splitlines()[0]
    assert "is not marked @hookimpl" in next(
        line for line in table.splitlines() if "fixture_unmarked" in line
    )


def test_list_plugins_check_imports_every_target_and_names_each_failure(capsys, request, monkeypatch):
    use_fixture_plugins(request, monkeypatch, disabled=("fixture_dup",))
    code, out, err = run_main(capsys, "list", "plugins", "--check")
    assert code == 1
    assert err.splitlines() == [
        "harness: error: method 'fixture-not-a-method' from plugin 'fixture_targets' "
        "(knowedit-fixture-plugins 1.0) is registered as <class 'knowedit_fixture_targets.NotAMethod'>, "
        "which is not a Method subclass",
        "harness: error: method 'fixture-unimportable' from plugin 'fixture_targets' "
        "(knowedit-fixture-plugins 1.0) could not be loaded from 'knowedit_fixture_broken:Method': "
        "ModuleNotFoundError: No module named 'knowedit_fixture_missing_dependency'",
    ]
    checks = {line.split()[0]: line.split()[-2:] for line in out.splitlines()[2:]}
    assert checks["fixture_targets"] == ["2", "failed"]
    assert checks["fixture_good"][-1] == "ok" and checks["builtin_methods"][-1] == "ok"


def test_list_plugins_check_passes_when_every_target_loads(capsys, request, monkeypatch):
    use_fixture_plugins(request, monkeypatch, disabled=("fixture_dup", "fixture_targets"))
    code, _, err = run_main(capsys, "list", "plugins", "--check")
    assert (code, err) == (0, "harness: every registered target loads\n")


def test_list_rejects_an_unknown_kind(capsys):
    code, _, err = run_main(capsys, "list", "widgets")
    assert code == 2
    assert "'widgets' is not one of" in err


def test_list_imports_neither_torch_nor_method_code():
    probe = (
        "import sys\n"
        "from harness.cli import main\n"
        "for what in ('plugins', 'methods', 'tasks', 'metrics', 'models', 'suites'):\n"
        "    try:\n"
        "        main(['list', what])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'knowedit_fixture_heavy') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
        "print('METHODS', sorted(m for m in sys.modules if m.startswith('harness_plugins.methods.')))\n"
    )
    result = harness_subprocess(probe, with_fixtures=True)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
    assert "METHODS []" in result.stdout
    assert "fixture-lazy" in result.stdout


def test_help_does_not_import_torch():
    result = harness_subprocess(
        "import sys\nfrom harness.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('TORCH', 'torch' in sys.modules)\n"
    )
    assert result.returncode == 0, result.stderr
    assert "TORCH False" in result.stdout
