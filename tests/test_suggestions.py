"""Every unknown name is refused before anything loads, naming the closest known one."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from harness.api import HarnessError
from harness.cli import cli
from harness.plugins import did_you_mean, get_registry


def refusal(args: list[str]) -> str:
    """The message `harness ARGS` is refused with."""
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0, result.output
    return str(result.exception) if isinstance(result.exception, HarnessError) else result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "smollm2-135"], "unknown model 'smollm2-135' (did you mean 'smollm2-135m'?)"),
        (["--method", "rom"], "unknown method 'rom' (did you mean 'rome'?); known methods: adalora,"),
        (["--method", "ft_l"], "unknown method 'ft_l' (did you mean 'ft-l'?)"),
        (["--task", "mini_zsr"], "unknown task 'mini_zsr' (did you mean 'mini_zsre'?)"),
        (["--metric", "edit_success"], "unknown metric 'edit_success' (did you mean 'edit_succ'?)"),
        (["--suite", "knowedit-mni"], "unknown suite 'knowedit-mni' (did you mean 'knowedit-mini'?)"),
        (["--mode", "singel"], "(did you mean 'single'?)"),
    ],
)
def test_a_near_miss_is_refused_with_the_closest_name(args, message, tmp_path):
    defaults = {"--method": "rome", "--task": "mini_zsre"}
    given = dict(zip(args[::2], args[1::2], strict=True))
    extra = [item for flag, value in defaults.items() if flag not in given for item in (flag, value)]
    out = tmp_path / "run"
    text = refusal(["run", *args, *([] if "--suite" in given else extra), "--out", str(out), "--dry-run"])
    assert message in text
    assert not out.exists()


def test_a_misspelt_alias_is_refused_at_plan_time_instead_of_reaching_the_hub(tmp_path):
    text = refusal(
        ["run", "--model", "smollm2-135", "--method", "ice", "--task", "mini_zsre", "--out", str(tmp_path)]
    )
    assert "known aliases: smollm2-135m" in text and "OWNER/NAME" in text
    assert "hub" in text and "connect" not in text.lower()
    models = get_registry().models
    models.check_spec("HuggingFaceTB/SmolLM2-135M-Instruct")  # a hub id: the loader's to fetch
    models.check_spec(str(tmp_path))  # a folder here
    models.check_spec("smollm2-135m")


def test_leaderboard_and_list_choices_suggest_too(tmp_path):
    assert "(did you mean 'html'?)" in refusal(["leaderboard", str(tmp_path), "--format", "htlm"])
    assert "(did you mean 'methods'?)" in refusal(["list", "method"])


def test_no_suggestion_for_a_name_that_is_not_close():
    assert did_you_mean("fixture-nope", ["fixture-bios", "zsre"]) == ""
    assert did_you_mean("ZSRE", ["zsre", "mquake"]) == " (did you mean 'zsre'?)"


@pytest.mark.slow  # indexing lm-eval's 14k task names takes 10-20 s
def test_a_misspelt_lm_eval_task_is_refused_with_the_closest_one():
    from pathlib import Path

    from harness.general import check_tasks

    tasks = Path(__file__).parent / "data" / "lmeval_tasks"
    with pytest.raises(HarnessError, match=r"'harness_fact_mc' \(did you mean 'harness_facts_mc'\?\)"):
        check_tasks(["harness_fact_mc"], include_path=tasks, offline=True)
