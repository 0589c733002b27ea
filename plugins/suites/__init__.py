"""Built-in suites: `knowedit` (the benchmark), `knowedit-mini` (the same on the bundled sample) and
`knowedit-quick` (knowedit-mini on the first record of each task: the default, minutes on a CPU).

Each suite is a JSON file next to this module, validated against schemas/suite.schema.json when a
run uses it. knowedit-quick repeats knowedit-mini's methods, tasks and hparams (a suite file cannot
include another); tests/test_main_job.py keeps the two equal but for the limit."""

from importlib import resources

from harness.api import hookimpl

SUITES = {
    "knowedit": "the six KnowEdit datasets x the study's methods (data from the hub or --data-dir)",
    "knowedit-mini": "the knowedit suite on the bundled sample (20 records per task): offline, on a CPU",
    "knowedit-quick": "knowedit-mini on the first record of each task: the default run, minutes on a CPU",
}


#: The suite `harness run` runs when given no suite, method or task: offline, minutes on a CPU.
DEFAULT_SUITE = "knowedit-quick"


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
