"""The stylefarm Python client: ``from shared.client import Client`` (see ``shared.client.client``).

Torch-free and server-free: httpx and pydantic, plus the job specs it can validate and
upload for (``Client.with_uploads``). The ``stylefarm submit | status | wait | result |
cancel | jobs | models | workers`` commands are built on it (``shared.cli.remote``).
"""

from shared.client.client import DEFAULT_URL, Client
from shared.client.errors import ApiError, Unreachable, WaitTimeout
from shared.client.retry import NO_RETRY, RetryPolicy
from shared.client.types import Input, Job, JobPage, JobProgress, JobResult, Model, Queue, Worker

__all__ = [
    "DEFAULT_URL",
    "NO_RETRY",
    "ApiError",
    "Client",
    "Input",
    "Job",
    "JobPage",
    "JobProgress",
    "JobResult",
    "Model",
    "Queue",
    "RetryPolicy",
    "Unreachable",
    "WaitTimeout",
    "Worker",
]
