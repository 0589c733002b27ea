"""Built-in suites: `knowedit` (the benchmark) and `knowedit-mini` (the same on the bundled sample).

Each suite is a JSON file next to this module, validated against schemas/suite.schema.json when a
run uses it."""

from importlib import resources

from harness import hookimpl

SUITES = {
    "knowedit": "the six KnowEdit datasets x the study's methods (data from the hub or --data-dir)",
    "knowedit-mini": "the knowedit suite on the bundled sample: offline, on a CPU",
}


@hookimpl
def harness_register_suites(register):
    folder = resources.files(__name__)
    for name, description in SUITES.items():
        register(name, str(folder / f"{name}.json"), description=description)
