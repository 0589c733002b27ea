"""Where the project's real editing data lies: `../shared/data` beside the repository (DESIGN.md).
Tests that read it skip only where that folder is absent, as on a user's machine."""

from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
KNOWEDIT = SHARED_DATA / "knowedit"
