"""The `capitals` task: a dataset spec shipped inside the package, read by the harness's own
wiki_recent format, so the plugin writes no loader at all."""

from importlib.resources import files

from harness.tasks import load_spec_task

SPEC = files("knowedit_nudge") / "data" / "capitals.spec.json"

capitals = load_spec_task(str(SPEC))
