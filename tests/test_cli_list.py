"""`harness --help` and `harness list`: what they show, and that they stay light (no torch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from fixtures import PLUGIN_SITE, use_fixture_plugins

from harness.cli import COMMANDS, main


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    """Run the `harness` entry point in-process, as the console script does."""
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


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
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert "failed" in lines["fixture_broken"] and "No module named" in lines["fixture_broken"]
    assert "boom while registering" in lines["fixture_raises"]
    assert "ok" in lines["fixture_good"] and "knowedit-fixture-plugins" in lines["fixture_good"]
    assert " 1.0 " in lines["fixture_good"]


def test_list_plugins_json_has_every_field(capsys, registry):
    code, out, _ = run_main(capsys, "list", "plugins", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert code == 0
    assert rows["fixture_good"] == {
        "name": "fixture_good",
        "distribution": "knowedit-fixture-plugins",
        "version": "1.0",
        "status": "ok",
        "hooks": "harness_register_methods, harness_register_tasks",
        "error": "",
    }
    assert rows["fixture_misspelt"]["status"] == "failed"


def test_list_tasks_json_shows_provider_description_and_conflicts(capsys, registry):
    code, out, _ = run_main(capsys, "list", "tasks", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert code == 0
    assert rows["fixture-bios"]["distribution"] == "knowedit-fixture-plugins"
    assert rows["fixture-bios"]["description"] == "Biographies in the fixture format (person, biography)."
    assert rows["fixture-bios"]["record_format"] == "fixture-bios"
    assert "registered twice" in rows["fixture-facts"]["error"]


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
