"""The one pydantic-settings ``Settings`` of stylefarm (API, worker and CLI read the same).

Every field can be set from the environment with the ``STYLEFARM_`` prefix
(``STYLEFARM_DATABASE_URL``, ...); ``DATABASE_URL``, ``REDIS_URL`` and the usual
``AWS_*`` names are accepted too. The embedded defaults (SQLite, local storage, a Redis
on localhost) run everything on one machine; production points the same code at
PostgreSQL, a Redis cluster and S3. Secrets have no defaults outside development, and
production refuses a development API key (``DEVELOPMENT_KEYS``, or any key shorter than
``MIN_PRODUCTION_KEY_LEN``) at start-up.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.storage import s3 as s3_timeouts

#: Keys that examples, tests and earlier compose files used: never valid in production.
DEVELOPMENT_KEYS = frozenset({"dev-key", "key-a", "key-b", "test", "secret", "changeme", "default", "stylefarm"})
MIN_PRODUCTION_KEY_LEN = 24


def is_development_key(key: str) -> bool:
    """A key production refuses: a known development key, or too short to be random."""
    return key in DEVELOPMENT_KEYS or len(key) < MIN_PRODUCTION_KEY_LEN


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STYLEFARM_", env_file=None, extra="ignore", populate_by_name=True)

    env: Literal["development", "production"] = "development"
    home: Path = Field(Path("./var"), description="where the embedded defaults keep their state")

    # --- database ---
    database_url: str = Field(
        "", validation_alias=AliasChoices("STYLEFARM_DATABASE_URL", "DATABASE_URL"),
        description="SQLAlchemy URL; empty = SQLite under home",
    )
    database_listen_url: str = Field(
        "", validation_alias=AliasChoices("STYLEFARM_DATABASE_LISTEN_URL"),
        description="PostgreSQL URL of the API's one LISTEN session (job event wake-ups); empty = "
        "database_url. Behind a transaction-mode pooler (PgBouncer), which cannot LISTEN, point it at "
        "PostgreSQL directly or at a session-mode pool",
    )

    # --- broker ---
    broker_url: str = Field(
        "redis://127.0.0.1:6379/0", validation_alias=AliasChoices("STYLEFARM_BROKER_URL", "REDIS_URL")
    )
    visibility_timeout_s: int = Field(4 * 3600, description="above the longest job's hard time limit")

    # --- storage ---
    storage: Literal["local", "s3"] = "local"
    storage_dir: Path | None = Field(None, description="local storage root; empty = home/storage")
    s3_endpoint_url: str | None = Field(
        None, validation_alias=AliasChoices("STYLEFARM_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL")
    )
    s3_bucket: str = "stylefarm"
    s3_region: str = Field("us-east-1", validation_alias=AliasChoices("STYLEFARM_S3_REGION", "AWS_DEFAULT_REGION"))
    s3_access_key: str | None = Field(
        None, validation_alias=AliasChoices("STYLEFARM_S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID")
    )
    s3_secret_key: str | None = Field(
        None, validation_alias=AliasChoices("STYLEFARM_S3_SECRET_KEY", "AWS_SECRET_ACCESS_KEY")
    )
    presign_expiry_s: int = Field(300, ge=10, le=7 * 24 * 3600)

    # --- API ---
    # an 8192 x 8192 image (the largest render, shared.jobs.specs.MAX_OUTPUT_SIDE) may be uploaded
    max_upload_bytes: int = 200 * 1024 * 1024
    max_pixels: int = 8192 * 8192
    # a video input (POST /v1/inputs: mp4, mov, webm, animated GIF; shared.videos)
    video_max_seconds: float = Field(30.0, gt=0, description="longest video input, in seconds")
    video_max_frames: int = Field(1800, gt=0, description="most frames of a video input")
    video_max_side: int = Field(1920, gt=0, description="longest side of a video input, in pixels")
    default_tenant: str = "default"
    api_keys: str = Field(
        "", description="comma-separated key=tenant pairs (single-machine setups); more keys live hashed in SQL "
        "(`stylefarm keys create`). No keys anywhere = no auth, in development only",
    )
    public_url: str = Field("", description="base URL for links in responses; empty = from the request")

    # --- tenants: API keys and budgets (shared/jobs/api_keys.py, shared/jobs/quotas.py) ---
    # Budget defaults of every tenant; `stylefarm tenants set-limits TENANT ...` overrides them per
    # tenant. Costs are in reference GPU-seconds (shared/jobs/cost.py).
    api_key_cache_s: float = Field(
        5.0, ge=0, le=60, description="the API trusts a key lookup this long: a revoked key stops working within it"
    )
    api_key_touch_interval_s: float = Field(
        60.0, ge=0, description="minimum seconds between last_used_at writes of a key"
    )
    quota_max_queued_jobs: int = Field(100, ge=0, description="jobs of a tenant waiting in the queue")
    quota_max_jobs_in_flight: int = Field(120, ge=0, description="jobs of a tenant queued or running")
    quota_max_cost_in_flight: float = Field(
        8 * 3600.0, ge=0, description="sum of the estimated costs of a tenant's queued and running jobs"
    )
    quota_max_job_cost: float = Field(4 * 3600.0, ge=0, description="estimated cost of one job")
    quota_max_upload_bytes_per_day: int = Field(
        2 * 1024**3, ge=0, description="bytes of new inputs a tenant stores in any 24 hours"
    )
    quota_retry_after_s: int = Field(30, ge=1, description="Retry-After of a 429 while jobs in flight hold the budget")

    # --- leases, sweeper, graceful leave (a fleet that loses nothing: shared.jobs.store, worker.sweeper) ---
    lease_ttl_s: float = Field(
        30.0, gt=0, le=3600,
        description="a claim holds its job this long; the worker renews it every lease_renew_s, and the sweeper "
        "requeues a running job whose lease expired (its worker died or was cut off)",
    )
    lease_renew_s: float = Field(5.0, gt=0, description="seconds between lease renewals of a running job")
    sweep_interval_s: float = Field(5.0, gt=0, le=600, description="seconds between two passes of the sweeper")
    sweep_queued_after_s: float = Field(
        10.0, ge=0, description="a queued job with no message in the broker for this long is sent again"
    )
    shutdown_grace_s: float = Field(
        30.0, ge=0,
        description="on SIGTERM a worker finishes a job that ends within this many seconds and hands back any "
        "other at once (keep the orchestrator's termination grace period above it)",
    )

    # --- worker ---
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    progress_interval_s: float = Field(0.5, gt=0, description="minimum seconds between progress writes")
    checkpoint_upload_interval_s: float = Field(
        120.0, ge=0, description="minimum seconds between training-checkpoint uploads (the first is uploaded at once)"
    )
    preview_every: float = Field(
        0.1, ge=0, le=1, description="optimize/masked jobs: a preview image every this fraction of the steps; 0 = none"
    )
    model_cache_dir: Path | None = Field(None, description="empty = home/models")
    max_attempts: int = Field(
        5, ge=1, le=100,
        description="the one retry budget: Job.attempts counts every claim of a job, and a job runs at most "
        "max_attempts times; the worker's retries of a transient error, the sweeper's requeues of a job whose lease "
        "expired and graceful leave's hand-backs all stop at it; then the job fails",
    )
    worker_queues: str = "gpu,cpu"
    tile_size: int = Field(
        1024, ge=128, le=2048,
        description="a render larger than this on its long side is split into tiles of at most this size, one child "
        "job each (shared.engine.methods.tiled): what bounds one worker's memory (Gatys tiles need ~6.0-6.8 GiB "
        "at 1024 px on a CPU; keep it below ~1600 px on 16 GiB workers: docs/performance.md, Memory)",
    )
    tile_overlap: int = Field(64, ge=16, le=512, description="least overlap of neighbouring tiles, blended feathered")
    tile_stats_size: int = Field(
        2048, ge=128, le=4096,
        description="the whole image's normalisation statistics of a tiled fast/adain render come from one pass at "
        "most this size (the one whole-image pass of a tiled render: a constant, whatever the output size)",
    )

    # --- fleet and timeouts (workers known to the farm; nothing hangs the API) ---
    worker_heartbeat_s: float = Field(
        5.0,
        gt=0,
        le=60,
        description="seconds between a worker's fleet heartbeats; its record expires after 3 missed ones",
    )
    s3_connect_timeout_s: float = Field(s3_timeouts.CONNECT_TIMEOUT_S, gt=0, description="S3: seconds to connect")
    s3_read_timeout_s: float = Field(
        s3_timeouts.READ_TIMEOUT_S, gt=0, description="S3: seconds each wait for bytes of an answer may take"
    )
    s3_max_attempts: int = Field(
        s3_timeouts.MAX_ATTEMPTS, ge=1, le=10, description="S3: tries per call, the first included"
    )
    db_statement_timeout_s: float = Field(
        5.0, ge=0, description="PostgreSQL statement_timeout of the API's sessions (0 = none)"
    )
    readiness_deadline_s: float = Field(1.0, gt=0, le=30, description="/readyz answers within this")
    # --- logs and metrics (shared.logs, api.metrics, worker.metrics) ---
    log_format: Literal["json", "text"] | None = Field(
        None, description="json (one object per line) or text; unset: text in development, json in production"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    gc_freeze: bool = Field(
        True, description="move start-up objects out of the garbage collector's full walks (shared.process_gc): the "
        "API once it has started, a worker process after the first job of each method. Off only where one process "
        "starts many apps (the test suite's in-process API tests)",
    )
    worker_metrics_port: int = Field(
        0, ge=0, le=65535, description="port of the worker's Prometheus /metrics (served by its main process); 0 = off"
    )
    worker_metrics_host: str = Field("0.0.0.0", description="address the worker's metrics port binds to")

    # --- archives and worker disk caches (shared.archives, worker.caches) ---
    # An archive (an uploaded zip/tar, checked by the API and again when the worker extracts
    # it) is refused the moment it crosses one cap, counted while it is decompressed.
    archive_max_bytes: int = Field(
        256 << 20, gt=0, description="most uncompressed bytes in one archive (about 10x max_upload_bytes)"
    )
    archive_max_members: int = Field(10_000, gt=0, description="most entries (files and folders) in one archive")
    archive_max_member_pixels: int | None = Field(
        None, gt=0, description="most pixels of one image in an archive; empty = max_pixels"
    )
    archive_max_total_pixels: int = Field(1_000_000_000, gt=0, description="most pixels of all images in one archive")
    # Least-recently-used entries are evicted to stay within these; entries a running job
    # holds are never evicted, so a single entry larger than its budget still works.
    model_cache_budget_bytes: int = Field(8 << 30, gt=0, description="disk for downloaded model files")
    dataset_cache_budget_bytes: int = Field(
        16 << 30, gt=0, description="disk for extracted dataset archives and synced prefix datasets"
    )
    input_cache_bytes: int = Field(
        64 << 20, ge=0, description="memory per worker process for recently read inputs' bytes (content-addressed, "
        "so a copy is never stale; the input's SQL row is still checked for every job); 0 = off",
    )

    # --- webhooks (shared.webhooks): a job's signed POST when it ends ---
    webhook_allow_hosts: str = Field(
        "",
        description="comma-separated host names, IP addresses or CIDRs (127.0.0.1, hooks.internal, 10.8.0.0/16) "
        "a webhook may reach although they are loopback, private, link-local, ... (refused otherwise); plain http "
        "is then allowed in production too. A cloud-metadata address is only allowed when named exactly",
    )
    webhook_max_attempts: int = Field(10, ge=1, le=50, description="deliveries tried per event before giving up")
    webhook_backoff_base_s: float = Field(
        5.0, gt=0, description="after failed attempt n the next waits base * 2**(n-1) seconds, capped at the max"
    )
    webhook_backoff_max_s: float = Field(3600.0, gt=0)

    @field_validator("webhook_allow_hosts")
    @classmethod
    def _webhook_allow_entries(cls, value: str) -> str:
        """Each entry is an address, a network or a host name; anything else is a typo."""
        entries = [e.strip().lower().rstrip(".") for e in value.split(",") if e.strip()]
        for entry in entries:
            try:
                ipaddress.ip_network(entry.strip("[]"), strict=False)
            except ValueError:
                if not re.fullmatch(r"[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?", entry):
                    raise ValueError(f"webhook_allow_hosts: {entry!r} is not a host name, address or CIDR") from None
        return ",".join(entries)

    @model_validator(mode="after")
    def _secrets_outside_development(self) -> Settings:
        if self.env != "development":
            missing = []
            if not self.database_url:
                missing.append("STYLEFARM_DATABASE_URL")
            if self.storage == "s3" and not (self.s3_access_key and self.s3_secret_key):
                missing.append("STYLEFARM_S3_ACCESS_KEY/STYLEFARM_S3_SECRET_KEY")
            if missing:
                raise ValueError(f"production settings need: {', '.join(missing)}")
            weak = [k for k in self.api_key_tenants() if is_development_key(k)]
            if weak:
                raise ValueError(
                    f"STYLEFARM_API_KEYS holds {len(weak)} development or short key(s) "
                    f"({', '.join(k[:4] + '...' for k in weak)}): production needs random keys of at least "
                    f"{MIN_PRODUCTION_KEY_LEN} characters (`stylefarm keys generate`), "
                    "or keys in SQL (`stylefarm keys create`)"
                )
        return self

    @model_validator(mode="after")
    def _lease_renewed_well_before_it_expires(self) -> Settings:
        if self.lease_renew_s * 2 > self.lease_ttl_s:
            raise ValueError(
                f"lease_renew_s ({self.lease_renew_s}) must be at most half of lease_ttl_s ({self.lease_ttl_s}), "
                "so one late renewal does not lose a lease"
            )
        return self

    @property
    def resolved_log_format(self) -> Literal["json", "text"]:
        if self.log_format is not None:
            return self.log_format
        return "json" if self.env == "production" else "text"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'stylefarm.db').resolve()}"

    @property
    def resolved_listen_url(self) -> str:
        return self.database_listen_url or self.resolved_database_url

    @property
    def resolved_storage_dir(self) -> Path:
        return (self.storage_dir or self.home / "storage").resolve()

    @property
    def resolved_model_cache_dir(self) -> Path:
        return (self.model_cache_dir or self.home / "models").resolve()

    @property
    def resolved_dataset_cache_dir(self) -> Path:
        return (self.home / "datasets").resolve()

    def api_key_tenants(self) -> dict[str, str]:
        pairs = [p.strip() for p in self.api_keys.split(",") if p.strip()]
        split = (p.partition("=") for p in pairs)  # KEY=TENANT, or a bare KEY of the default tenant
        return {key: tenant if sep else self.default_tenant for key, sep, tenant in split}


@lru_cache
def get_settings() -> Settings:
    return Settings()
