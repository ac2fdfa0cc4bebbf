"""Logs of the API and the workers: one line per event, JSON in production, text in development.

``configure_logging(settings, service=...)`` installs one stderr handler on the root logger
with the format ``Settings.resolved_log_format`` names:

* ``json`` (the default when ``STYLEFARM_ENV=production``): one JSON object per line with
  ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, ``pid``, the process's own
  fields (``service``, and ``worker`` in a worker), the fields bound to the current context
  (``job_id``, ``tenant``, ``method``, ``worker`` while a job runs; ``tenant`` during an API
  request), every ``extra={...}`` field of the call, and ``exc`` with the traceback, if any.
* ``text`` (the default in development): ``time LEVEL [process] logger: message`` followed by
  the bound fields as ``key=value``.

Fields are bound with ``bind(**fields)`` / ``reset(token)`` (or ``with bound(...)``) on a
``ContextVar``: the worker binds the job's fields when a task starts and resets them when it
ends (``worker.metrics``), the API binds the caller's tenant per request (``api.metrics``),
and every line logged in between, from any module, carries them.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import IO, Any

from shared.settings import Settings

#: The fields a job's log lines carry (where known).
JOB_FIELDS = ("job_id", "tenant", "method", "worker")

_EMPTY: Mapping[str, Any] = {}
_bound: ContextVar[Mapping[str, Any]] = ContextVar("stylefarm_log_fields", default=_EMPTY)

#: Attributes every ``LogRecord`` has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}

TEXT_FORMAT = "%(asctime)s %(levelname)s [%(processName)s] %(name)s: %(message)s"


def bind(**fields: Any) -> Token[Mapping[str, Any]]:
    """Add ``fields`` (``None`` values are left out) to the current context's log fields;
    returns the token for ``reset``."""
    merged = {**_bound.get(), **{k: v for k, v in fields.items() if v is not None}}
    return _bound.set(merged)


def reset(token: Token[Mapping[str, Any]]) -> None:
    """Restore the fields as they were before the ``bind`` that returned ``token``."""
    _bound.reset(token)


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    token = bind(**fields)
    try:
        yield
    finally:
        reset(token)


def current_fields() -> dict[str, Any]:
    """The fields bound in the current context."""
    return dict(_bound.get())


def _event_fields(record: logging.LogRecord, static: Mapping[str, Any]) -> dict[str, Any]:
    """The process's fields, then the context's, then the call's ``extra`` (later ones win)."""
    extra = {
        k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS and not k.startswith("_") and v is not None
    }
    return {**static, **_bound.get(), **extra}


class JsonFormatter(logging.Formatter):
    """One JSON object per line (newlines in messages and tracebacks are escaped)."""

    def __init__(self, static: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.static = dict(static or {})

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        event.update(_event_fields(record, self.static))
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            event["stack"] = self.formatStack(record.stack_info)
        return json.dumps(event, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT`` plus the fields bound to the context as ``key=value`` (not the
    process's own, which every line would repeat, nor ``extra``: messages carry their facts)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _bound.get()
        if not fields:
            return line
        pairs = " ".join(f"{k}={v}" for k, v in fields.items())
        head, sep, tail = line.partition("\n")  # after the message, before a traceback
        return f"{head}  [{pairs}]{sep}{tail}"


class _StylefarmHandler(logging.StreamHandler):
    """The handler ``configure_logging`` installs (and replaces when called again)."""


def formatter_for(settings: Settings, static: Mapping[str, Any] | None = None) -> logging.Formatter:
    if settings.resolved_log_format == "json":
        return JsonFormatter(static)
    return TextFormatter()


def configure_logging(
    settings: Settings,
    *,
    service: str,
    level: int | str | None = None,
    static: Mapping[str, Any] | None = None,
    adopt: tuple[str, ...] = (),
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Send the process's logs to ``stream`` (stderr) in the configured format.

    ``service`` (``api``, ``worker``) and ``static`` are fields of every JSON line; ``level``
    defaults to ``Settings.log_level``; ``adopt`` names loggers that have their own handlers
    (uvicorn's) and should log through this one instead. Calling it again replaces the handler
    it installed before; other handlers on the root logger (a test runner's) are left alone.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StylefarmHandler)]:
        root.removeHandler(old)
    handler = _StylefarmHandler(stream or sys.stderr)
    handler.setFormatter(formatter_for(settings, {"service": service, **(static or {})}))
    root.addHandler(handler)
    chosen = settings.log_level if level is None else level
    root.setLevel(chosen.upper() if isinstance(chosen, str) else chosen)
    for name in adopt:
        adopted = logging.getLogger(name)
        adopted.handlers.clear()
        adopted.propagate = True
    return handler
