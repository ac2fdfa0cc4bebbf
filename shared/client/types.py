"""What the client returns: typed views of the API's JSON.

Each model types the members a caller reads and keeps every other member the server sends
(``extra="allow"``), so a newer server's additions are still there (``model_dump()``) and an
older server's missing optional members read as their defaults.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.jobs.status import FINAL_STATUSES


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow")


class JobProgress(_Wire):
    fraction: float = 0.0
    step: int = 0
    total: int = 0
    loss: float | None = None
    stage: str = ""


class JobResult(_Wire):
    width: int | None = None
    height: int | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)


class Job(_Wire):
    id: str
    method: str
    status: str
    spec: dict[str, Any] = Field(default_factory=dict)
    queue: str | None = None
    priority: int = 0
    attempts: int = 0
    cancel_requested: bool = False
    progress: JobProgress = Field(default_factory=JobProgress)
    error: dict[str, Any] | None = Field(default=None, description="RFC 9457 problem of a failed job")
    result: JobResult | None = None
    model_id: str | None = None
    links: dict[str, str] = Field(default_factory=dict)
    position: int | None = None
    estimated_start_s: float | None = None
    revision: int | None = Field(default=None, description="set on jobs read from the event stream")

    @property
    def final(self) -> bool:
        """succeeded, failed or canceled: the job will not change any more."""
        return self.status in FINAL_STATUSES


class JobPage(_Wire):
    items: list[Job]
    next_cursor: str | None = None


class Input(_Wire):
    id: str = Field(description="sha256 of the bytes: the reference a job spec uses")
    size: int
    width: int | None = None
    height: int | None = None
    content_type: str = ""
    kind: str = "image"


class Model(_Wire):
    id: str
    name: str
    kind: str
    scope: str = ""
    style_names: list[str] = Field(default_factory=list)
    num_styles: int = 0


class Worker(_Wire):
    id: str
    host: str | None = None
    state: str = ""
    queues: list[str] = Field(default_factory=list)
    device: str | None = None
    device_name: str | None = None
    busy: bool = False
    models: list[str] = Field(default_factory=list)


class Queue(_Wire):
    name: str
    waiting: int | None = None
    queued: int = 0
    running: int = 0
    workers: int | None = None
    idle_workers: int | None = None
