"""The plugin registry: entry-point discovery, isolation of broken plugins, duplicate names,
disabled plugins, misspelt hooks and lazy targets, with real (fixture) plugins installed through
real entry points."""

from __future__ import annotations

import sys

import pytest
from fixtures import use_fixture_plugins

from harness import hookimpl
from harness.api import HarnessError
from harness.plugins import KINDS, build_registry


@pytest.fixture
def registry(request, monkeypatch):
    return use_fixture_plugins(request, monkeypatch)


def test_builtin_plugins_come_through_entry_points(registry):
    builtin = {name: info for name, info in registry.plugins.items() if name.startswith("builtin_")}
    assert set(builtin) == {f"builtin_{kind}" for kind in KINDS}
    assert all(info.distribution == "knowedit-harness" and info.status == "ok" for info in builtin.values())


def test_import_error_is_recorded_and_others_still_load(registry):
    broken = registry.plugins["fixture_broken"]
    assert broken.status == "failed"
    assert broken.error == "ModuleNotFoundError: No module named 'knowedit_fixture_missing_dependency'"
    assert registry.plugins["fixture_good"].status == "ok"
    assert "fixture-bios" in registry.names("tasks")


def test_exception_inside_a_hook_fails_that_plugin_and_drops_its_half_registration(registry):
    raises = registry.plugins["fixture_raises"]
    assert raises.status == "failed"
    assert "harness_register_methods raised RuntimeError: boom while registering" in raises.error
    assert "knowedit_fixture_raises.py:" in raises.error
    assert "fixture-half" not in registry.names("methods")
    assert "fixture-lazy" in registry.names("methods")


def test_misspelt_hook_fails_only_that_plugin(registry):
    misspelt = registry.plugins["fixture_misspelt"]
    assert misspelt.status == "failed"
    assert "unknown hook 'harness_register_metric'" in misspelt.error
    assert "did you mean 'harness_register_metrics'?" in misspelt.error
    assert "fixture-never" not in registry.names("metrics")
    assert registry.plugins["fixture_good"].hooks == ["harness_register_methods", "harness_register_tasks"]


def test_a_name_registered_twice_is_an_error_naming_both_origins(registry):
    assert "fixture-facts" in registry.names("tasks")
    with pytest.raises(HarnessError) as info:
        registry.get("tasks", "fixture-facts")
    message = str(info.value)
    assert "task 'fixture-facts' is registered twice" in message
    assert "plugin 'fixture_good' (knowedit-fixture-plugins 1.0)" in message
    assert "plugin 'fixture_dup' (knowedit-fixture-dup 2.0)" in message


def test_disabled_plugins_are_skipped_by_entry_point_or_distribution_name(request, monkeypatch):
    registry = use_fixture_plugins(request, monkeypatch, disabled=("fixture_dup", "knowedit-fixture-plugins"))
    statuses = {name: info.status for name, info in registry.plugins.items() if name.startswith("fixture_")}
    assert statuses == dict.fromkeys(
        ("fixture_broken", "fixture_dup", "fixture_good", "fixture_misspelt", "fixture_raises"), "disabled"
    )
    assert not [name for name in registry.names("tasks") if name.startswith("fixture-")]
    assert registry.failures() == []


def test_disabling_the_duplicate_resolves_the_conflict(request, monkeypatch):
    registry = use_fixture_plugins(request, monkeypatch, disabled=("fixture_dup",))
    assert registry.get("tasks", "fixture-facts").plugin.name == "fixture_good"


def test_lazy_target_is_imported_only_on_load(registry):
    component = registry.get("methods", "fixture-lazy")
    assert component.target == "knowedit_fixture_heavy:HeavyMethod"
    assert component.description == "Imported only when used"
    cls = registry.load("methods", "fixture-lazy")
    assert cls.__module__ == "knowedit_fixture_heavy" and cls.name == "fixture-lazy"
    assert "knowedit_fixture_heavy" in sys.modules


def test_unknown_name_lists_known_ones_and_failed_plugins(registry):
    with pytest.raises(HarnessError) as info:
        registry.get("tasks", "fixture-nope")
    message = str(info.value)
    assert message.startswith("unknown task 'fixture-nope'; known tasks: ")
    assert "fixture-bios" in message
    assert "plugins that failed to load: " in message and "fixture_broken" in message


def test_a_lazy_target_that_does_not_import_names_the_plugin():
    class Plugin:
        @hookimpl
        def harness_register_metrics(self, register):
            register("ghost", "knowedit_no_such_module:Ghost", description="never importable")

    registry = build_registry(extra_plugins=[("ghosts", Plugin())])
    with pytest.raises(HarnessError) as info:
        registry.load("metrics", "ghost")
    assert str(info.value).startswith("metric 'ghost' from plugin 'ghosts' ((direct)) could not be loaded")
    assert "ModuleNotFoundError" in str(info.value)


def test_description_defaults_to_the_first_docstring_line():
    class Documented:
        """First line.

        More text."""

    class Plugin:
        @hookimpl
        def harness_register_suites(self, register):
            register("documented", Documented)

    registry = build_registry(extra_plugins=[("docs", Plugin())])
    assert registry.get("suites", "documented").description == "First line."
