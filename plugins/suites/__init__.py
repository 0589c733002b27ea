"""Built-in suites: `knowedit` (the benchmark) and `knowedit-mini` (the same on the bundled sample).

Each suite is a JSON file next to this module, validated against schemas/suite.schema.json when a
run uses it."""

from importlib import resources

from harness.api import hookimpl

SUITES = {
    "knowedit": "the six KnowEdit datasets x the study's methods (data from the hub or --data-dir)",
    "knowedit-mini": "the knowedit suite on the bundled sample: offline, on a CPU",
}


#: The suite `harness run` runs when given no suite, method or task: offline, on a CPU.
DEFAULT_SUITE = "knowedit-mini"


@hookimpl
def harness_register_suites(register):
    folder = resources.files(__name__)
    for name, description in SUITES.items():
        register(
            name,
            str(folder / f"{name}.json"),
            description=description,
            **({"default": True} if name == DEFAULT_SUITE else {}),
        )
