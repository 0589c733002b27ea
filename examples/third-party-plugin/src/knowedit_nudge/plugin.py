"""The entry point: registers everything by "module:attribute", so that `harness list` imports
neither torch nor this package's method code."""

from harness.api import hookimpl


@hookimpl
def harness_register_methods(register):
    register(
        "logit-nudge", "knowedit_nudge.method:LogitNudge", description="Rank-one nudge of the target logit"
    )


@hookimpl
def harness_register_metrics(register):
    register(
        "first_token_hit", "knowedit_nudge.metric:FirstTokenHit", description="Top next token is the target's"
    )


@hookimpl
def harness_register_tasks(register):
    register(
        "capitals",
        "knowedit_nudge.tasks:capitals",
        description="Four capital-city edits (a dataset spec in the wiki_recent format)",
    )
