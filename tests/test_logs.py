"""Structured logs (shared/logs.py): JSON lines with the job's fields, or text for people."""

from __future__ import annotations

import io
import json
import logging
import threading

import pytest

from shared import logs
from shared.settings import Settings


@pytest.fixture
def capture() -> io.StringIO:
    """Where ``configure_logging``'s handler writes in a test."""
    return io.StringIO()


def configured(settings: Settings, stream: io.StringIO, **kwargs) -> logging.Handler:
    return logs.configure_logging(settings, service="worker", stream=stream, **kwargs)


@pytest.fixture(autouse=True)
def _restore_root_logger():
    """Each test configures the root logger; put it back as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_line_carries_the_bound_job_fields_and_the_call_extras(tmp_path, capture: io.StringIO) -> None:
    """Given JSON logs and a job's fields bound, when a module logs with an extra field and an
    exception, then the line is one JSON object with all of them."""
    configured(Settings(home=tmp_path, log_format="json"), capture, static={"worker": "w1@host"})
    with logs.bound(job_id="j1", tenant="acme", method="fast", worker="w1@host"):
        try:
            raise ValueError("bad pixel\nsecond line")
        except ValueError:
            logging.getLogger("stylefarm.worker").exception("job %s: failed", "j1", extra={"attempt": 2})
    lines = capture.getvalue().splitlines()
    assert len(lines) == 1  # the traceback's newlines are escaped inside the one line
    event = json.loads(lines[0])
    assert {k: event[k] for k in ("job_id", "tenant", "method", "worker", "service", "attempt")} == {
        "job_id": "j1",
        "tenant": "acme",
        "method": "fast",
        "worker": "w1@host",
        "service": "worker",
        "attempt": 2,
    }
    assert event["message"] == "job j1: failed" and event["level"] == "ERROR"
    assert event["logger"] == "stylefarm.worker" and event["ts"].endswith("+00:00")
    assert "ValueError: bad pixel" in event["exc"]


def test_fields_end_with_their_context(tmp_path, capture: io.StringIO) -> None:
    """Given fields bound around one job, then lines after it, and lines of another thread during
    it, do not carry them."""
    configured(Settings(home=tmp_path, log_format="json"), capture)
    log = logging.getLogger("stylefarm.test")
    token = logs.bind(job_id="j1", method="fast")
    other = threading.Thread(target=lambda: log.info("other thread"))
    other.start()
    other.join()
    log.info("during")
    logs.reset(token)
    log.info("after")
    events = {e["message"]: e for e in map(json.loads, capture.getvalue().splitlines())}
    assert events["during"]["job_id"] == "j1" and events["during"]["method"] == "fast"
    assert "job_id" not in events["after"] and "job_id" not in events["other thread"]
    assert logs.current_fields() == {}


def test_text_lines_are_for_people_with_the_fields_at_the_end(tmp_path, capture: io.StringIO) -> None:
    configured(Settings(home=tmp_path, log_format="text"), capture)
    with logs.bound(job_id="j2", tenant="default"):
        logging.getLogger("stylefarm.worker").info("job %s: claimed by w1", "j2")
    line = capture.getvalue().strip()
    assert " INFO [MainProcess] stylefarm.worker: job j2: claimed by w1  [job_id=j2 tenant=default]" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_format_defaults_to_text_in_development_and_json_in_production(tmp_path) -> None:
    assert Settings(home=tmp_path).resolved_log_format == "text"
    production = Settings(home=tmp_path, env="production", database_url="sqlite://", api_keys=f"{'k' * 32}=t")
    assert production.resolved_log_format == "json"
    assert Settings(home=tmp_path, log_format="json").resolved_log_format == "json"


def test_configuring_again_replaces_its_handler_and_keeps_others(tmp_path, capture: io.StringIO) -> None:
    """Given a handler someone else installed, when logging is configured twice, then one line
    per event goes to our stream and the other handler still gets it too."""
    root = logging.getLogger()
    theirs = logging.StreamHandler(io.StringIO())
    root.addHandler(theirs)
    settings = Settings(home=tmp_path, log_format="json")
    configured(settings, io.StringIO())
    configured(settings, capture, level="warning")
    logging.getLogger("stylefarm.test").info("quiet")
    logging.getLogger("stylefarm.test").warning("loud")
    assert [json.loads(x)["message"] for x in capture.getvalue().splitlines()] == ["loud"]
    assert theirs in root.handlers and "loud" in theirs.stream.getvalue()
