"""Running the `harness` entry point in-process, as the console script does, for CLI tests."""

from __future__ import annotations

import pytest

from harness.cli import main


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of `harness ARGV`; a traceback in either is a failure of the
    CLI (every error must reach the user as a message), so it fails the test here."""
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err
