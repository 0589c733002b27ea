"""Where the project's real editing data lies: `../shared/data` beside the repository (DESIGN.md).
Tests that read it skip only where that folder is absent, as on a user's machine."""

from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
KNOWEDIT = SHARED_DATA / "knowedit"
#: The EasyEdit copy of MEND's zsRE eval file (1037 records in MEND's format): what tests use
#: where MEND's zsRE train file, which is not in the shared data, would be.
MEND_ZSRE_EVAL = (
    SHARED_DATA
    / "other"
    / "easyedit_editing_data"
    / "portability"
    / "One Hop"
    / "zsre_mend_eval_portability_gpt4.json"
)
