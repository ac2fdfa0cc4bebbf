"""``stylefarm submit | status | wait | result | cancel | jobs | models | workers`` against a
running farm: API (uvicorn) with an API key, one Celery worker, Redis, SQLite + local storage.

Each command runs as its own process (``python -m shared.cli.main``), as a user would run it,
with ``STYLEFARM_URL`` and ``STYLEFARM_API_KEY`` in its environment; the test reads exit codes,
stdout and stderr.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from shared.cli.stack import free_port
from shared.client import Client

from harness import Farm, RedisServer, start_farm

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
API_KEY = "cli-key-acme"


@pytest.fixture(scope="module")
def cli_farm(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    farm = start_farm("sqlite-local", home=tmp_path_factory.mktemp("cli-farm"), redis=redis_server, workers=1,
                      extra_env={"STYLEFARM_API_KEYS": f"{API_KEY}=acme"})  # fmt: skip
    try:
        yield farm
    finally:
        farm.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, content_png: bytes, style_png: bytes) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli-files")
    (root / "content.png").write_bytes(content_png)  # 128x96
    (root / "style.png").write_bytes(style_png)
    return {"content": root / "content.png", "style": root / "style.png", "dir": root}


def stylefarm(
    farm: Farm, *argv: str, key: str | None = API_KEY, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shared.cli.main", *argv], env=cli_env(farm, key), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def cli_env(farm: Farm, key: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STYLEFARM_")}
    env.update({"STYLEFARM_URL": farm.api_url, "PYTHONPATH": str(REPO)})
    if key:
        env["STYLEFARM_API_KEY"] = key
    return env


def test_given_a_local_file_when_submitted_with_wait_expect_the_result_png(
    cli_farm: Farm, files: dict[str, Path]
) -> None:
    out = files["dir"] / "out.png"
    # when a fast job is submitted from a local file, waited for, and its result downloaded
    done = stylefarm(cli_farm, "submit", "fast", str(files["content"]), "--style", "3", "--size", "64",
                     "--wait", "-o", str(out))  # fmt: skip
    # expect exit 0, a PNG of the asked size (64 px long side of a 4:3 image), the bar at 100 % on stderr
    assert done.returncode == 0, done.stderr
    image = Image.open(io.BytesIO(out.read_bytes()))
    assert image.format == "PNG" and image.size == (64, 48)
    assert "100%" in done.stderr and f"wrote {out} (64x48)" in done.stderr
    job_id, method, status = done.stdout.split()[:3]
    assert (method, status) == ("fast", "succeeded")
    # and the job is the caller's: status, jobs and result find it
    assert stylefarm(cli_farm, "status", job_id).stdout.split()[2] == "succeeded"
    assert job_id in stylefarm(cli_farm, "jobs", "--status", "succeeded").stdout
    again = files["dir"] / "again.png"
    fetched = stylefarm(cli_farm, "result", job_id, "-o", str(again))
    assert fetched.returncode == 0 and again.read_bytes() == out.read_bytes()


def test_given_json_expect_every_command_to_print_parseable_json(cli_farm: Farm, files: dict[str, Path]) -> None:
    submitted = stylefarm(cli_farm, "submit", "fast", str(files["content"]), "--size", "64", "--json")
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads(submitted.stdout)
    assert job["status"] in ("queued", "running", "succeeded") and job["method"] == "fast"
    waited = stylefarm(cli_farm, "wait", job["id"], "--json", "-o", str(files["dir"] / "w.png"))
    assert waited.returncode == 0, waited.stderr
    done = json.loads(waited.stdout)
    assert done["status"] == "succeeded" and done["result"]["width"] == 64 and done["output"].endswith("w.png")
    assert json.loads(stylefarm(cli_farm, "status", job["id"], "--json").stdout)["status"] == "succeeded"
    listed = json.loads(stylefarm(cli_farm, "jobs", "--limit", "1", "--json").stdout)
    assert [j["id"] for j in listed["items"]] == [job["id"]]
    models = json.loads(stylefarm(cli_farm, "models", "--json").stdout)
    builtin = [m for m in models if m["name"] == "multistyle26"]
    assert builtin and builtin[0]["num_styles"] == 26
    fleet = json.loads(stylefarm(cli_farm, "workers", "--json").stdout)
    assert set(fleet) == {"workers", "queues"}  # null where the farm has no fleet endpoints
    fetched = json.loads(stylefarm(cli_farm, "result", job["id"], "-o", str(files["dir"] / "r.png"), "--json").stdout)
    assert fetched["bytes"] == (files["dir"] / "r.png").stat().st_size > 0


def test_given_bad_input_expect_exit_2_with_the_problem_detail(cli_farm: Farm, files: dict[str, Path]) -> None:
    # a model the farm does not have: the API refuses it (422) and says why
    bad = stylefarm(cli_farm, "submit", "fast", str(files["content"]), "--model", "no-such-model")
    assert bad.returncode == 2 and "model 'no-such-model' does not exist" in bad.stderr
    assert "Traceback" not in bad.stderr and bad.stdout == ""
    # no API key: 401, also a caller's problem
    anonymous = stylefarm(cli_farm, "jobs", key=None)
    assert anonymous.returncode == 2 and "API key" in anonymous.stderr


def test_given_an_unreachable_url_expect_exit_4(cli_farm: Farm) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    gone = stylefarm(cli_farm, "status", "some-job", "--url", nobody, "--retries", "1")
    assert gone.returncode == 4 and "Server unreachable" in gone.stderr and nobody in gone.stderr
    assert time.monotonic() - started < 60


def test_given_a_long_optimize_job_when_canceled_expect_the_waiter_exits_3(
    cli_farm: Farm, files: dict[str, Path]
) -> None:
    # given a long optimize job, running
    submitted = stylefarm(cli_farm, "submit", "optimize", str(files["content"]), "--style", str(files["style"]),
                          "--size", "64", "--steps", "3000", "--optimizer", "adam", "--json")  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["id"]
    with Client(cli_farm.api_url, API_KEY) as client:
        deadline = time.monotonic() + 180
        while (job := client.get(job_id)).status != "running" or job.progress.step < 1:
            assert time.monotonic() < deadline and not job.final, job
            time.sleep(0.3)
    # and a waiter on it, and one that gives up after a second
    waiter = subprocess.Popen([sys.executable, "-m", "shared.cli.main", "wait", job_id, "--json"],
                              env=cli_env(cli_farm, API_KEY), cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        impatient = stylefarm(cli_farm, "wait", job_id, "--timeout", "1", "-q")
        assert impatient.returncode == 5 and f"job {job_id} is still running" in impatient.stderr
        # when the job is canceled from another command
        canceled = stylefarm(cli_farm, "cancel", job_id)
        assert canceled.returncode == 0, canceled.stderr
        # expect the waiter to end with exit 3 and the canceled job as JSON
        out, err = waiter.communicate(timeout=120)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    assert waiter.returncode == 3, err
    assert json.loads(out)["status"] == "canceled" and f"job {job_id} was canceled" in err
