"""``stylefarm submit | status | wait | cancel | jobs`` in this process against the real API
served by uvicorn (the queue is a recorder, so jobs stay queued unless a test cancels them).
The same commands against a whole running farm: tests/e2e/test_e2e_cli_client.py."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pytest

from shared.cli import main as cli
from shared.cli.stack import free_port
from shared.jobs.methods import REGISTRY

from api_helpers import EnqueueRecorder, png_bytes

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    path.write_bytes(png_bytes(32, 24))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_given_submit_json_expect_the_uploaded_job_then_status_and_jobs_agree(
    api_url: str, photo: Path, enqueued: EnqueueRecorder, capsys: pytest.CaptureFixture[str]
) -> None:
    # when a fast job is submitted from a local file with --json
    code, out, _ = run(capsys, "submit", "fast", str(photo), "--style", "4", "--url", api_url, "--json")
    # expect exit 0 and the job as JSON, its content the uploaded file's id
    assert code == 0
    job = json.loads(out)
    assert job["status"] == "queued" and job["spec"]["style"] == 4
    assert job["spec"]["content"] == hashlib.sha256(photo.read_bytes()).hexdigest()
    assert enqueued.job_ids == [job["id"]]
    # and status / jobs show it, as JSON and as text
    code, out, _ = run(capsys, "status", job["id"], "--url", api_url, "--json")
    assert code == 0 and json.loads(out)["id"] == job["id"]
    code, out, _ = run(capsys, "jobs", "--url", api_url, "--json")
    assert code == 0 and [j["id"] for j in json.loads(out)["items"]] == [job["id"]]
    code, out, _ = run(capsys, "status", job["id"], "--url", api_url)
    # (the API answers a queued job's position; no worker here, so no start estimate)
    assert code == 0 and out.split() == [job["id"], "fast", "queued", "0%", "position", "0"]
    # and plain submit prints the bare id on stdout, for $(...)
    code, out, _ = run(capsys, "submit", "fast", str(photo), "--url", api_url)
    assert code == 0 and len(out.strip()) == 32 and out.strip() != job["id"]


def test_given_an_invalid_option_expect_exit_2_before_any_request(
    photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"  # would be exit 4 if anything were sent
    code, _, err = run(capsys, "submit", "fast", str(photo), "--strength", "5", "--url", nobody)
    assert code == 2 and "--strength: Input should be less than or equal to 1" in err
    code, _, err = run(capsys, "submit", "fast", str(photo.with_name("gone.png")), "--url", nobody)
    assert code == 2 and "gone.png: no such file" in err
    code, _, err = run(capsys, "submit", "fast", str(photo), "-o", "out.jpg", "--url", nobody)
    assert code == 2 and "PNG" in err


def test_given_a_4xx_answer_expect_exit_2_with_the_problem(
    api_url: str, photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "submit", "fast", str(photo), "--model", "no-such-model", "--url", api_url, "--json")
    assert code == 2 and "model 'no-such-model' does not exist" in err
    problem = json.loads(out)
    assert problem["status"] == 422 and problem["type"].endswith("/model-unavailable")
    code, _, err = run(capsys, "status", "no-such-job", "--url", api_url)
    assert code == 2 and "no-such-job" in err and "Traceback" not in err


def test_given_a_queued_job_expect_wait_timeout_5_then_cancel_3(
    api_url: str, photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "submit", "fast", str(photo), "--url", api_url)
    job_id = out.strip()
    # a job nobody runs: waiting with --timeout gives up with exit 5, and says the job goes on
    code, _, err = run(capsys, "wait", job_id, "--timeout", "0.5", "-q", "--url", api_url)
    assert code == 5 and f"job {job_id} is still queued" in err
    # cancel --wait: a queued job is canceled at once; exit 3 says so
    code, out, _ = run(capsys, "cancel", job_id, "--wait", "--url", api_url, "--json")
    assert code == 3 and json.loads(out)["status"] == "canceled"
    # waiting on a canceled job ends at once with the same code
    code, _, err = run(capsys, "wait", job_id, "-q", "--url", api_url)
    assert code == 3 and "canceled" in err


def test_given_help_expect_the_remote_commands_and_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for name in ("submit", "status", "wait", "result", "cancel", "jobs", "models", "workers"):
        assert f"    {name} " in out
    assert "exit codes:" in out and "3    the job was canceled" in out and "4    the server is unreachable" in out


@pytest.mark.parametrize("method", list(REGISTRY))
def test_given_any_method_expect_submit_to_take_the_options_of_render(method: str) -> None:
    parser, per_method = cli.build_parser()
    submit = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["submit"]
    sub = next(a for a in submit._actions if isinstance(a, argparse._SubParsersAction)).choices[method]
    remote_options = sub.get_default("field_options")
    assert [(o.field, o.flags) for o in remote_options] == [(o.field, o.flags) for o in per_method[method]]
    assert {o.field for o in remote_options} == set(REGISTRY[method].spec.model_fields) - {"method"}
