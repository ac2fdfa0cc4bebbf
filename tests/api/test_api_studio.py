"""The studio's files served by the API, and the input download the gallery uses.

(The page itself is exercised in a real browser by tests/e2e/test_e2e_studio.py.)
"""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from api.main import STUDIO_DIR
from shared.settings import Settings

from api_helpers import EnqueueRecorder, assert_problem, make_client, png_bytes, upload_id


def test_given_root_expect_the_studio_page_with_a_strict_policy(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/studio/js/app.js">' in response.text
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src" not in policy  # scripts only from this server
    assert "/" not in client.get("/openapi.json").json()["paths"]  # the page is not part of the API


def test_given_the_studio_files_expect_each_served_and_every_import_resolving(client: TestClient) -> None:
    # given every file shipped under api/static
    files = sorted(p.relative_to(STUDIO_DIR).as_posix() for p in STUDIO_DIR.rglob("*") if p.is_file())
    assert "index.html" in files and "js/app.js" in files and "studio.css" in files
    for name in files:
        response = client.get(f"/studio/{name}")
        assert response.status_code == 200, name
    assert "javascript" in client.get("/studio/js/app.js").headers["content-type"]
    # expect every module import and every page reference to name a shipped file
    for path in STUDIO_DIR.rglob("*.js"):
        for ref in re.findall(r'from "\./([\w.]+)"', path.read_text()):
            assert f"js/{ref}" in files, (path.name, ref)
    for ref in re.findall(r'(?:src|href)="/studio/([\w./]+)"', (STUDIO_DIR / "index.html").read_text()):
        assert ref in files, ref


def test_given_the_studio_files_expect_nothing_fetched_from_another_host() -> None:
    # an absolute URL anywhere in the page's files (other than the SVG namespace) would be a fetch elsewhere
    for path in STUDIO_DIR.rglob("*"):
        if path.is_file():
            text = path.read_text().replace('xmlns="http://www.w3.org/2000/svg"', "")
            assert not re.search(r"\b(?:https?:)?//[\w.-]+\.[a-z]{2,}", text, re.I), path.name


def test_given_an_input_expect_its_bytes_for_its_tenant_only(settings: Settings, enqueued: EnqueueRecorder) -> None:
    for client in make_client(settings.model_copy(update={"api_keys": "key-a=acme,key-b=globex"})):
        data = png_bytes(20, 10, (1, 2, 3))
        input_id = upload_id(client, data, headers={"X-API-Key": "key-a"})
        response = client.get(f"/v1/inputs/{input_id}/content", headers={"X-API-Key": "key-a"})
        assert response.status_code == 200 and response.content == data
        assert response.headers["content-type"] == "image/png"
        assert_problem(client.get(f"/v1/inputs/{input_id}/content", headers={"X-API-Key": "key-b"}), 404, "not-found")
