"""The `capitals` task: a dataset spec shipped inside the package, registered by its path, so that
the harness reads it with its own wiki_recent format and the plugin writes no loader at all."""

from importlib.resources import files

capitals = str(files("knowedit_nudge") / "data" / "capitals.spec.json")
