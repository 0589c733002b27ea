"""The plugin registry: entry-point discovery, what a broken plugin costs (import errors, raising,
misspelt, wrongly declared and unmarked hooks), duplicate names, disabled plugins, lazy targets,
the typed view of each kind, defaults, and that nothing below the command layer builds the
registry, with real (fixture) plugins installed through real entry points."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

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
    # One plugin per kind of component, and the packages that register commands (ROME family, analysis).
    commands = {"builtin_rome_family", "builtin_analysis"}
    expected = {f"builtin_{kind}" for kind in KINDS if kind != "commands"} | commands
    assert set(builtin) == expected
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


def test_misspelt_hook_is_skipped_and_the_plugins_other_hooks_still_register(registry):
    misspelt = registry.plugins["fixture_misspelt"]
    assert misspelt.status == "failed"
    assert "unknown hook 'harness_register_metric', skipped" in misspelt.error
    assert "did you mean 'harness_register_metrics'?" in misspelt.error
    assert "fixture-never" not in registry.names("metrics")
    assert misspelt.hooks == ["harness_register_methods"]
    assert "fixture-kept" in registry.names("methods")
    assert registry.plugins["fixture_good"].hooks == ["harness_register_methods", "harness_register_tasks"]


def test_a_hook_asking_for_arguments_the_harness_does_not_pass_is_skipped_alone():
    class Plugin:
        @hookimpl
        def harness_register_methods(self, reg):
            reg("never", "knowedit_nowhere:Method")

        @hookimpl
        def harness_register_metrics(self, register):
            register("kept", "knowedit_nowhere:Metric")

    registry = build_registry(extra_plugins=[("wrong-args", Plugin())])
    info = registry.plugins["wrong-args"]
    assert info.status == "failed"
    assert (
        "hook 'harness_register_methods' asks for 'reg', but the harness passes only 'register'" in info.error
    )
    assert info.hooks == ["harness_register_metrics"]
    assert "kept" in registry.names("metrics") and "never" not in registry.names("methods")


def test_an_unmarked_hook_is_a_warning_and_the_marked_hooks_register(registry, caplog):
    unmarked = registry.plugins["fixture_unmarked"]
    assert unmarked.status == "ok" and unmarked.errors == []
    # `harness_home`, imported from the harness by the plugin module, is not taken for a hook.
    assert unmarked.warnings == [
        "function 'harness_register_suites' is not marked @hookimpl, so the harness ignores it"
    ]
    assert "fixture-model" in registry.names("models")
    assert "fixture-forgotten" not in registry.names("suites")
    with caplog.at_level("WARNING", logger="harness.plugins"):
        build_registry()
    assert (
        "plugin 'fixture_unmarked': function 'harness_register_suites' is not marked @hookimpl" in caplog.text
    )


def test_an_unmarked_misspelt_function_gets_both_hints():
    class Plugin:
        def harness_register_metric(self, register):
            """Neither marked nor spelt right."""

    registry = build_registry(extra_plugins=[("sloppy", Plugin())])
    (warning,) = registry.plugins["sloppy"].warnings
    assert warning == (
        "function 'harness_register_metric' is not marked @hookimpl, so the harness ignores it "
        "(did you mean 'harness_register_metrics'?)"
    )


def test_a_name_registered_twice_is_an_error_naming_both_origins_and_what_to_disable(registry):
    assert "fixture-facts" in registry.names("tasks")
    with pytest.raises(HarnessError) as info:
        registry.get("tasks", "fixture-facts")
    message = str(info.value)
    assert "task 'fixture-facts' is registered twice" in message
    assert "plugin 'fixture_good' (knowedit-fixture-plugins 1.0)" in message
    assert "plugin 'fixture_dup' (knowedit-fixture-dup 2.0)" in message
    assert message.endswith(
        "disable one of the two plugins: "
        "HARNESS_DISABLE_PLUGINS=fixture_good or HARNESS_DISABLE_PLUGINS=fixture_dup"
    )
    assert registry.conflict_messages() == [message]


def test_disabled_plugins_are_skipped_by_entry_point_or_distribution_name(request, monkeypatch):
    registry = use_fixture_plugins(request, monkeypatch, disabled=("fixture_dup", "knowedit-fixture-plugins"))
    statuses = {name: info.status for name, info in registry.plugins.items() if name.startswith("fixture_")}
    fixture_plugins = ("broken", "dup", "good", "misspelt", "raises", "targets", "unmarked")
    assert statuses == {f"fixture_{name}": "disabled" for name in fixture_plugins}
    assert not [name for name in registry.names("tasks") if name.startswith("fixture-")]
    assert registry.failures() == []
    assert registry.conflict_messages() == []


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


# -- typed views: each kind hands out its objects checked, in one place --------------------------


class _Thing:
    """Neither a Method, a Task nor a Metric."""


@pytest.mark.parametrize(
    ("kind", "target", "expected"),
    [
        ("methods", _Thing, "which is not a Method subclass"),
        ("tasks", _Thing, "which is not a Task subclass, a Task or the path of a dataset spec"),
        ("metrics", _Thing(), "which is not a Metric subclass or a Metric"),
        ("models", 42, "which is not a callable returning a model location"),
        ("suites", 42, "which is not the path of a suite file (or a callable returning one)"),
    ],
)
def test_a_target_of_the_wrong_type_is_refused_naming_plugin_and_target(kind, target, expected):
    class Plugin:
        pass

    def hook(register):
        register("odd", target)

    setattr(Plugin, KINDS[kind], staticmethod(hookimpl(hook)))
    registry = build_registry(extra_plugins=[("odd-plugin", Plugin())])
    with pytest.raises(HarnessError) as info:
        registry.kinds[kind].load("odd")
    message = str(info.value)
    assert message.startswith(f"{kind[:-1]} 'odd' from plugin 'odd-plugin' ((direct)) is registered as ")
    assert repr(target) in message and message.endswith(expected)


def test_a_lazy_target_of_the_wrong_type_names_where_it_came_from(registry):
    with pytest.raises(HarnessError) as info:
        registry.methods.load("fixture-not-a-method")
    assert str(info.value) == (
        "method 'fixture-not-a-method' from plugin 'fixture_targets' (knowedit-fixture-plugins 1.0) is "
        "registered as <class 'knowedit_fixture_targets.NotAMethod'>, which is not a Method subclass"
    )


def test_each_view_hands_out_what_its_kind_promises(registry):
    from harness.api import Method, Task

    assert issubclass(registry.methods.load("fixture-lazy"), Method)
    assert isinstance(registry.tasks.load("fixture-bios"), Task)
    assert registry.load("methods", "fixture-lazy") is registry.methods.load("fixture-lazy")
    assert registry.suites.load("knowedit-mini").name == "knowedit-mini.json"
    assert registry.models.locate("fixture-model") == ("/nowhere", "/nowhere")
    assert registry.models.locate("/some/folder") is None


def test_check_loads_every_target_and_names_each_failure(registry):
    failures = {(f.plugin, f.kind, f.name): f.message for f in registry.check()}
    assert set(failures) == {
        ("fixture_targets", "methods", "fixture-unimportable"),
        ("fixture_targets", "methods", "fixture-not-a-method"),
    }
    unimportable = failures[("fixture_targets", "methods", "fixture-unimportable")]
    assert unimportable == (
        "method 'fixture-unimportable' from plugin 'fixture_targets' (knowedit-fixture-plugins 1.0) could "
        "not be loaded from 'knowedit_fixture_broken:Method': ModuleNotFoundError: No module named "
        "'knowedit_fixture_missing_dependency'"
    )


# -- defaults: the core asks the registry, a plugin marks them ------------------------------------


def _suite_plugin(*names: str, default: tuple[str, ...] = ()):
    class Plugin:
        @hookimpl
        def harness_register_suites(self, register):
            for name in names:
                register(name, f"/suites/{name}.json", **({"default": True} if name in default else {}))

    return Plugin()


def test_the_builtin_plugins_mark_the_default_suite_and_model():
    registry = build_registry()
    assert registry.suites.default() == "knowedit-quick"
    assert registry.models.default() == "smollm2-135m"


def test_a_second_default_is_an_error_naming_both(monkeypatch):
    monkeypatch.setenv("HARNESS_DISABLE_PLUGINS", "builtin_suites")
    registry = build_registry(extra_plugins=[("a", _suite_plugin("one", default=("one",)))])
    assert registry.suites.default() == "one"
    both = build_registry(
        extra_plugins=[
            ("a", _suite_plugin("one", default=("one",))),
            ("b", _suite_plugin("two", default=("two",))),
        ]
    )
    with pytest.raises(HarnessError) as info:
        both.suites.default()
    assert str(info.value).startswith(
        "several suites are marked default: 'one' by plugin 'a' ((direct)), 'two' by plugin 'b' ((direct)); "
    )


def test_no_default_is_an_error_saying_how_to_mark_one(monkeypatch):
    monkeypatch.setenv("HARNESS_DISABLE_PLUGINS", "builtin_suites")
    registry = build_registry(extra_plugins=[("a", _suite_plugin("one"))])
    with pytest.raises(
        HarnessError, match=r"no installed plugin marks a default suite \(register\(\.\.\., default=True\)\)"
    ):
        registry.suites.default()


# -- the registry is handed down, never looked up below the command layer -------------------------

ROOT = Path(__file__).resolve().parents[1]
#: Where the process-wide registry may be built: the command layer, the registry module itself,
#: and `harness.testing` (what tests and a plugin's tests import; never imported by a run).
MAY_BUILD_THE_REGISTRY = ("harness/commands/", "harness/cli.py", "harness/plugins.py", "harness/testing/")


def test_nothing_below_the_command_layer_looks_plugins_up_by_itself():
    offenders = []
    for path in sorted((ROOT / "harness").rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith(MAY_BUILD_THE_REGISTRY):
            continue
        for node in ast.walk(ast.parse(path.read_text(), relative)):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module == "harness.plugins":
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.Name | ast.Attribute):
                names = [node.id if isinstance(node, ast.Name) else node.attr]
            for name in set(names) & {"get_registry", "build_registry"}:
                offenders.append(f"{relative}:{node.lineno} uses {name}")
    assert not offenders, "\n".join(offenders)
