"""Problems about unexpected exceptions never show a server path or a traceback."""

from __future__ import annotations

import errno
import json

from shared.errors import EngineError, describe_unexpected


def test_given_an_os_error_with_a_file_name_expect_only_its_errno_in_the_problem() -> None:
    # given an OSError from the worker's own disk, naming a server path
    exc = OSError(errno.ENOSPC, "No space left on device", "/var/lib/stylefarm/tmp/stylefarm-job-1/x.pt")
    # when it becomes a problem
    problem = EngineError(f"the job failed unexpectedly ({describe_unexpected(exc)})").to_problem()
    # expect the kind of failure, not where
    text = json.dumps(problem)
    assert "ENOSPC" in text and "No space left on device" in text
    assert "/var/lib" not in text and "x.pt" not in text and "Traceback" not in text


def test_given_a_message_with_absolute_paths_expect_them_redacted() -> None:
    exc = RuntimeError("could not load /opt/models/abc/model.pt (from /tmp/w/1): bad magic; see https://x.org/a")
    text = describe_unexpected(exc)
    assert text == "RuntimeError: could not load <path> (from <path>): bad magic; see https://x.org/a"


def test_given_a_long_message_expect_it_cut() -> None:
    assert len(describe_unexpected(ValueError("v" * 5000))) <= len("ValueError: ") + 500
