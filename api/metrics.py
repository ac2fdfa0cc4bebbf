"""The API's Prometheus metrics at ``GET /metrics`` and its access log.

* HTTP, per request (``MetricsMiddleware``, outermost, so answers of the other middleware
  count too): ``stylefarm_http_requests_total`` and ``stylefarm_http_request_duration_seconds``
  by method, route template (``/v1/jobs/{job_id}``, never the raw path) and status, and
  ``stylefarm_http_problems_total`` by route and problem type for every problem+json answer.
  The duration runs until the last byte of the response: for ``/v1/jobs/{job_id}/events``
  that is the life of the event stream.
* The farm, read when scraped and cached ``FARM_STATE_TTL_S`` seconds (``FarmStateCollector``):
  ``stylefarm_jobs`` by status and method (one grouped COUNT), the age of the oldest queued
  job per queue and of the most silent running job's heartbeat, and the waiting messages per
  queue from the broker; ``stylefarm_database_up`` / ``stylefarm_broker_up`` say whether the
  last read worked.

Each request also logs one line (``stylefarm.api.access``) with the route, status, duration
and, where known, the job id and the caller's tenant, which is bound to the log context for
the whole request (``shared.logs``). Probes and scrapes log at DEBUG.

With ``PROMETHEUS_MULTIPROC_DIR`` set (an API run as several server processes) the HTTP
metrics of all of them are added up (``shared.metrics.multiprocess_registry``).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.datastructures import Headers
from starlette.routing import Mount, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import get_tenant
from api.problems import PROBLEM_MEDIA_TYPE
from shared import logs
from shared.broker.celery_config import QUEUES
from shared.db.orm import Job
from shared.db.session import session_scope
from shared.jobs.methods import REGISTRY
from shared.jobs.status import JobStatus
from shared.metrics import HTTP_SECONDS_BUCKETS, multiprocess_dir, multiprocess_registry, problem_type_label
from shared.settings import Settings

access_log = logging.getLogger("stylefarm.api.access")

#: Seconds a scrape's SQL and broker reads are reused by the next scrapes.
FARM_STATE_TTL_S = 5.0
#: Routes whose access lines are DEBUG: probes and scrapes, many a minute.
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
UNMATCHED_ROUTE = "unmatched"
MAX_PROBLEM_BODY = 64 * 1024
_JOB_LOCATION = re.compile(r"/v1/jobs/([0-9a-f]+)$")


# --- the farm, from SQL and the broker ---------------------------------------------------


class FarmStateCollector(Collector):
    """Jobs by status and method, queue ages and depths: read on scrape, cached for
    ``ttl_s`` seconds so a burst of scrapes costs one grouped COUNT and one broker round trip."""

    def __init__(self, settings: Settings, ttl_s: float = FARM_STATE_TTL_S) -> None:
        self.settings = settings
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._cached: list[Metric] = []
        self._read_at = -float("inf")

    def describe(self) -> Iterable[Metric]:
        return []  # registering must not read the database

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            started = time.monotonic()
            if started - self._read_at >= self.ttl_s:
                self._cached = [*self._database_families(), *self._broker_families()]
                self._read_at = started  # the data's age counts from when it was read, not when the read ended
            return list(self._cached)

    def _database_families(self) -> list[Metric]:
        up = GaugeMetricFamily("stylefarm_database_up", "1 when the last read of the jobs table worked, else 0")
        try:
            counts, queued_since, oldest_heartbeat = _read_jobs_table()
        except Exception:
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        now = datetime.now(UTC)
        jobs = GaugeMetricFamily("stylefarm_jobs", "Jobs by status and method (every job the table holds)",
                                 labels=["status", "method"])
        known = {(s.value, m) for s in JobStatus for m in REGISTRY}  # zeros too: no series appears out of nowhere
        for status, method in sorted(known | set(counts)):
            jobs.add_metric([status, method], counts.get((status, method), 0))
        queued_age = GaugeMetricFamily(
            "stylefarm_job_queued_age_seconds",
            "Seconds the longest-waiting queued job of each queue has waited since it was queued (0: none waiting)",
            labels=["queue"],
        )
        for queue in sorted(set(QUEUES) | set(queued_since)):
            since = queued_since.get(queue)
            queued_age.add_metric([queue], max(0.0, (now - since).total_seconds()) if since else 0.0)
        heartbeat = GaugeMetricFamily(
            "stylefarm_job_heartbeat_age_seconds",
            "Seconds since the most silent running job last wrote progress (0: none running); its worker also "
            "renews the job's lease every few seconds, and the sweeper requeues a job whose lease expired",
        )
        heartbeat.add_metric([], max(0.0, (now - oldest_heartbeat).total_seconds()) if oldest_heartbeat else 0.0)
        return [up, jobs, queued_age, heartbeat]

    def _broker_families(self) -> list[Metric]:
        from shared.broker.client import queue_lengths

        up = GaugeMetricFamily("stylefarm_broker_up", "1 when the last read of the queue lengths worked, else 0")
        try:
            lengths = queue_lengths(self.settings)
        except Exception:
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        depth = GaugeMetricFamily("stylefarm_queue_depth", "Messages waiting in the broker per queue", labels=["queue"])
        for queue, length in sorted(lengths.items()):
            depth.add_metric([queue], length)
        return [up, depth]


def _read_jobs_table() -> tuple[dict[tuple[str, str], int], dict[str, datetime], datetime | None]:
    """(count per (status, method), oldest ``updated_at`` of a queued job per queue, oldest
    ``updated_at`` of a running job) in three aggregate queries."""
    with session_scope() as session:
        counts = {
            (status, method): int(n)
            for status, method, n in session.execute(
                select(Job.status, Job.method, func.count()).group_by(Job.status, Job.method)
            )
        }
        queued_since = {
            queue: since
            for queue, since in session.execute(
                select(Job.queue, func.min(Job.updated_at))
                .where(Job.status == JobStatus.QUEUED.value)
                .group_by(Job.queue)
            )
            if since is not None
        }
        oldest_heartbeat = session.scalar(select(func.min(Job.updated_at)).where(Job.status == JobStatus.RUNNING.value))
    return counts, queued_since, oldest_heartbeat


# --- HTTP ------------------------------------------------------------------------------------


class ApiMetrics:
    """One app's metrics: its own registry (apps built in one process never share samples)."""

    def __init__(self, settings: Settings) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.farm = FarmStateCollector(settings)
        self.registry.register(self.farm)
        labels = ["method", "route", "status"]
        self.requests = Counter("stylefarm_http_requests_total", "HTTP requests answered",
                                labels, registry=self.registry)
        self.latency = Histogram("stylefarm_http_request_duration_seconds",
                                 "Seconds from a request's arrival to the last byte of its response",
                                 labels, buckets=HTTP_SECONDS_BUCKETS, registry=self.registry)
        self.problems = Counter("stylefarm_http_problems_total", "Problem+json answers by problem type",
                                ["route", "problem_type"], registry=self.registry)

    def observe(self, method: str, route: str, status: int, seconds: float, problem_type: str | None) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route, str(status)).observe(seconds)
        if problem_type is not None:
            self.problems.labels(route, problem_type).inc()

    def exposition(self) -> bytes:
        """The text format of every metric (the HTTP ones of all server processes in
        multiprocess mode)."""
        path = multiprocess_dir()
        registry = multiprocess_registry(path, self.farm) if path is not None else self.registry
        return generate_latest(registry)


class RouteTemplates:
    """Path templates of the documented routes and the mounts' prefixes, to name the route of
    a request that has no ``scope["route"]``: one a middleware answered before routing (an
    ``OPTIONS`` 204, a 413), or a file of a mount. Read from the app on first use."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._compiled: list[tuple[re.Pattern[str], str]] | None = None

    def match(self, path: str) -> str | None:
        if self._compiled is None:
            paths = sorted(self.app.openapi().get("paths", {}), key=lambda p: (p.count("{"), p))  # literal paths first
            mounts = [r.path for r in self.app.router.routes if isinstance(r, Mount)]  # static files: their prefix
            self._compiled = [(compile_path(p)[0], p) for p in paths]
            self._compiled += [(re.compile(re.escape(m) + "(/.*)?$"), m) for m in mounts]
        return next((template for regex, template in self._compiled if regex.match(path)), None)


def route_template(scope: Scope, templates: RouteTemplates) -> str:
    """The path template of the route that served ``scope`` (``/v1/jobs/{job_id}``; a mount's
    prefix), or of the documented route whose path matches when a middleware answered before
    routing; ``unmatched`` otherwise (never the raw path: one series per URL would grow
    without end)."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str) and path:
        return path
    return templates.match(scope["path"]) or UNMATCHED_ROUTE


async def _tenant_of(settings: Settings, scope: Scope) -> str | None:
    """The caller's tenant for the log context (through the app's ``KeyCache``, so no extra SQL
    per request; a miss is looked up off the event loop), None when its key is missing or wrong."""
    cache = getattr(getattr(scope.get("app"), "state", None), "key_cache", None)
    if cache is None:
        return None
    headers = Headers(scope=scope)
    try:
        return await get_tenant(settings, cache, headers.get("authorization"), headers.get("x-api-key"))
    except Exception:
        return None


class MetricsMiddleware:
    """ASGI middleware: counts and times every HTTP request, notes the problem type of
    problem+json answers, binds the tenant to the log context and writes the access line."""

    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics, settings: Settings, templates: RouteTemplates) -> None:
        self.app = app
        self.metrics = metrics
        self.settings = settings
        self.templates = templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answer: dict[str, Any] = {"status": 500, "location": None, "problem": None}

        async def observing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = Headers(raw=message.get("headers", []))
                answer["status"] = int(message["status"])
                answer["location"] = headers.get("location")
                if headers.get("content-type", "").startswith(PROBLEM_MEDIA_TYPE):
                    answer["problem"] = bytearray()
            elif message["type"] == "http.response.body" and answer["problem"] is not None:
                body: bytearray = answer["problem"]
                if len(body) < MAX_PROBLEM_BODY:
                    body.extend(message.get("body", b"")[: MAX_PROBLEM_BODY - len(body)])
            await send(message)

        token = logs.bind(tenant=await _tenant_of(self.settings, scope))
        try:
            await self.app(scope, receive, observing_send)
        finally:
            seconds = time.perf_counter() - started
            route = route_template(scope, self.templates)
            problem = _problem_type(answer["problem"])
            self.metrics.observe(scope["method"], route, answer["status"], seconds, problem)
            _log_access(scope, route, answer["status"], seconds, problem, answer["location"])
            logs.reset(token)


def _problem_type(body: bytearray | None) -> str | None:
    if body is None:
        return None
    try:
        problem = json.loads(bytes(body))
    except ValueError:
        return problem_type_label(None)
    return problem_type_label(problem if isinstance(problem, dict) else None)


def _log_access(
    scope: Scope, route: str, status: int, seconds: float, problem: str | None, location: str | None
) -> None:
    job_id = (scope.get("path_params") or {}).get("job_id")
    if job_id is None and location and (m := _JOB_LOCATION.search(location)):
        job_id = m.group(1)
    level = logging.DEBUG if route in QUIET_ROUTES else logging.INFO
    access_log.log(
        level, "%s %s %s %.1fms", scope["method"], scope["path"], status, seconds * 1000,
        extra={"http_method": scope["method"], "route": route, "status": status,
               "duration_ms": round(seconds * 1000, 1), "problem_type": problem, "job_id": job_id},
    )


def install_metrics(app: FastAPI, settings: Settings) -> ApiMetrics:
    """Add ``GET /metrics`` and the middleware to ``app`` (after every other middleware, so
    it is the outermost and sees their answers too); the metrics are ``app.state.metrics``."""
    metrics = ApiMetrics(settings)
    app.state.metrics = metrics

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        return Response(content=metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(MetricsMiddleware, metrics=metrics, settings=settings, templates=RouteTemplates(app))
    return metrics
