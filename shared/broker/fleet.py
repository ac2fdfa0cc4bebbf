"""The fleet registry: which workers are alive, what they are and what they run, kept in the
broker's Redis so that dead workers disappear on their own.

Layout::

    stylefarm:fleet:worker:<worker id>   a hash per worker, expiring WORKER_TTL_HEARTBEATS
                                          heartbeats after its last refresh
    stylefarm:fleet:workers               a sorted set: worker id -> the time its record
                                          expires (Redis server time), the index readers use

Who writes which fields of a worker's hash (``worker.fleet`` does all of it):

* the worker's main process, a heartbeat every ``Settings.worker_heartbeat_s``: ``host``,
  ``pid``, ``queues``, ``state`` (``ready`` | ``stopping``), ``started_at``, and
  ``heartbeat_at`` (set by the heartbeat script from Redis's own clock, so a worker with a
  wrong clock is neither shown dead nor kept alive);
* each pool process, once at start: ``device``, ``device_name``, ``memory_bytes``; after each
  job: ``models:<pid>`` (the models its jobs loaded, most recent first); and ``job:<pid>`` =
  ``{"id": job id, "since": time}`` while it runs a job (set when it claims it, deleted when
  it finishes).

A worker is alive while its index entry has not expired: a killed worker stops heartbeating
and drops out of ``list_workers`` after at most three heartbeats; its hash expires with it.
A worker that leaves cleanly removes both at once (``unregister``).

Cost: one round trip per worker per heartbeat (a short Lua script: HSET, PEXPIRE, ZADD),
1,000 workers at 5 s = 200 small commands/s, and two round trips per job. A reader does
three (TIME, ZRANGEBYSCORE, one pipeline of HGETALL).

Torch-free and worker-free: the API reads the fleet through this module.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import redis

log = logging.getLogger("stylefarm.fleet")

KEY_PREFIX = "stylefarm:fleet:worker:"
INDEX_KEY = "stylefarm:fleet:workers"
JOB_FIELD_PREFIX = "job:"
MODELS_FIELD_PREFIX = "models:"
WORKER_TTL_HEARTBEATS = 3
#: Seconds a fleet read or write may wait for Redis: the registry is advisory, never worth a hang.
SOCKET_TIMEOUT_S = 2.0

# KEYS[1] the worker's hash, KEYS[2] the index; ARGV[1] ttl (ms), ARGV[2] worker id,
# ARGV[3..] field/value pairs. Stamps heartbeat_at with the server's clock.
_HEARTBEAT_LUA = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl_ms = tonumber(ARGV[1])
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[1], 'heartbeat_at', string.format('%.3f', now_ms / 1000))
redis.call('PEXPIRE', KEYS[1], ttl_ms)
redis.call('ZADD', KEYS[2], now_ms + ttl_ms, ARGV[2])
return now_ms
"""

_clients: dict[str, redis.Redis] = {}
_clients_lock = threading.Lock()


def worker_key(worker_id: str) -> str:
    return KEY_PREFIX + worker_id


def ttl_s(heartbeat_s: float) -> float:
    """How long a worker's record outlives its last heartbeat."""
    return WORKER_TTL_HEARTBEATS * heartbeat_s


def client_for(broker_url: str, timeout_s: float = SOCKET_TIMEOUT_S) -> redis.Redis | None:
    """A Redis client (``timeout_s`` to connect and per answer; cached per URL, timeout and
    process) for the broker at ``broker_url``; ``None`` when the broker is not Redis (then
    there is no fleet registry)."""
    if not broker_url.startswith(("redis://", "rediss://", "unix://")):
        return None
    import os

    key = f"{os.getpid()}:{timeout_s}:{broker_url}"  # a forked process must not share its parent's sockets
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = redis.Redis.from_url(broker_url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
            _clients[key] = client
        return client


def _encode(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# --- writers (the worker) ----------------------------------------------------------------


def heartbeat(client: redis.Redis, worker_id: str, fields: Mapping[str, Any], ttl: float) -> float:
    """Write ``fields`` (non-strings as JSON), stamp ``heartbeat_at`` and keep the worker
    alive for ``ttl`` seconds more; returns the server time of the heartbeat."""
    args: list[str] = [str(int(ttl * 1000)), worker_id]
    for name, value in fields.items():
        args += [name, _encode(value)]
    now_ms = client.eval(_HEARTBEAT_LUA, 2, worker_key(worker_id), INDEX_KEY, *args)
    return int(now_ms) / 1000


def set_fields(client: redis.Redis, worker_id: str, fields: Mapping[str, Any], ttl: float) -> None:
    """Write ``fields`` without counting as a heartbeat (a pool process's device, models)."""
    pipe = client.pipeline(transaction=True)
    pipe.hset(worker_key(worker_id), mapping={k: _encode(v) for k, v in fields.items()})
    pipe.pexpire(worker_key(worker_id), int(ttl * 1000))
    pipe.execute()


def set_current_job(client: redis.Redis, worker_id: str, pid: int, job_id: str | None, ttl: float) -> None:
    """Record that pool process ``pid`` runs ``job_id`` now (``None``: runs nothing)."""
    name = f"{JOB_FIELD_PREFIX}{pid}"
    if job_id is None:
        client.hdel(worker_key(worker_id), name)
        return
    set_fields(client, worker_id, {name: {"id": job_id, "since": round(time.time(), 3)}}, ttl)


def unregister(client: redis.Redis, worker_id: str) -> None:
    """A clean leave: the worker disappears from the fleet at once."""
    pipe = client.pipeline(transaction=True)
    pipe.delete(worker_key(worker_id))
    pipe.zrem(INDEX_KEY, worker_id)
    pipe.execute()


# --- readers (the API) -------------------------------------------------------------------


@dataclass(frozen=True)
class RunningJob:
    id: str
    since: float | None


@dataclass(frozen=True)
class WorkerRecord:
    """One live worker, as its processes last reported it (times are unix seconds)."""

    id: str
    host: str | None
    pid: int | None
    state: str
    queues: list[str]
    started_at: float | None
    heartbeat_at: float | None
    expires_at: float
    device: str | None
    device_name: str | None
    memory_bytes: int | None
    models: list[str]
    jobs: list[RunningJob] = field(default_factory=list)

    @property
    def busy(self) -> bool:
        return bool(self.jobs)

    @property
    def current_job(self) -> RunningJob | None:
        """The job it started last (a worker runs one job per pool process)."""
        return max(self.jobs, key=lambda j: j.since or 0.0) if self.jobs else None


def _text(raw: Mapping[bytes, bytes], name: str) -> str | None:
    value = raw.get(name.encode())
    return value.decode(errors="replace") if value is not None else None


def _json(raw: Mapping[bytes, bytes], name: str, default: Any) -> Any:
    text = _text(raw, name)
    if text is None:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def _number(raw: Mapping[bytes, bytes], name: str) -> float | None:
    text = _text(raw, name)
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _record(worker_id: str, expires_at: float, raw: Mapping[bytes, bytes]) -> WorkerRecord:
    jobs: list[RunningJob] = []
    models: list[str] = []
    for name in raw:
        key = name.decode(errors="replace")
        if key.startswith(JOB_FIELD_PREFIX):
            value = _json(raw, key, {})
            if isinstance(value, dict) and isinstance(value.get("id"), str):
                since = value.get("since")
                jobs.append(RunningJob(value["id"], float(since) if isinstance(since, int | float) else None))
        elif key.startswith(MODELS_FIELD_PREFIX):
            names = _json(raw, key, [])
            models += [str(m) for m in names if str(m) not in models] if isinstance(names, list) else []
    pid = _number(raw, "pid")
    memory = _number(raw, "memory_bytes")
    queues = _json(raw, "queues", [])
    return WorkerRecord(
        id=worker_id,
        host=_text(raw, "host"),
        pid=int(pid) if pid is not None else None,
        state=_text(raw, "state") or "starting",
        queues=[str(q) for q in queues] if isinstance(queues, list) else [],
        started_at=_number(raw, "started_at"),
        heartbeat_at=_number(raw, "heartbeat_at"),
        expires_at=expires_at,
        device=_text(raw, "device"),
        device_name=_text(raw, "device_name"),
        memory_bytes=int(memory) if memory is not None else None,
        models=models,
        jobs=sorted(jobs, key=lambda j: j.since or 0.0),
    )


def list_workers(client: redis.Redis) -> list[WorkerRecord]:
    """The live workers, by id. Index entries that expired (workers that died) are removed."""
    seconds, micros = client.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    entries = cast(list[tuple[bytes, float]], client.zrangebyscore(INDEX_KEY, now_ms, "+inf", withscores=True))
    client.zremrangebyscore(INDEX_KEY, "-inf", now_ms - 1)
    if not entries:
        return []
    pipe = client.pipeline(transaction=False)
    for member, _score in entries:
        pipe.hgetall(worker_key(member.decode()))
    raws = pipe.execute()
    out = []
    for (member, score), raw in zip(entries, raws, strict=True):
        if raw:  # the hash can expire a moment before its index entry
            out.append(_record(member.decode(), score / 1000, raw))
    return sorted(out, key=lambda w: w.id)


class FleetCache:
    """``list_workers`` remembered for ``max_age_s``: job reads estimate start times from
    the fleet, and clients poll them; one Redis read per process every few seconds is enough.
    A read waits at most ``READ_TIMEOUT_S``, and a failed one is not tried again for
    ``FAILED_AGE_S``, so a hung Redis slows job reads rarely and briefly."""

    READ_TIMEOUT_S = 0.5
    FAILED_AGE_S = 10.0

    def __init__(self, max_age_s: float = 2.0) -> None:
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._at = -1e9
        self._url = ""
        self._workers: list[WorkerRecord] | None = None

    def get(self, broker_url: str) -> list[WorkerRecord] | None:
        """The live workers, or ``None`` when the registry cannot be read now."""
        with self._lock:
            max_age = self.max_age_s if self._workers is not None else max(self.max_age_s, self.FAILED_AGE_S)
            if self._url == broker_url and time.monotonic() - self._at < max_age:
                return self._workers
        client = client_for(broker_url, self.READ_TIMEOUT_S)
        workers: list[WorkerRecord] | None = None
        if client is not None:
            try:
                workers = list_workers(client)
            except redis.RedisError as exc:
                log.warning("fleet registry unreadable: %s", exc)
        with self._lock:
            self._url, self._at, self._workers = broker_url, time.monotonic(), workers
        return workers


fleet_cache = FleetCache()
