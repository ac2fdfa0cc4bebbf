"""The web studio in a real headless Chromium (Debian's ``chromium``, driven by Playwright)
against a real farm: API (uvicorn) with API keys, one Celery worker, Redis, SQLite + local
storage.

A person's path through the page: enter the key, upload a content image, pick a built-in
style, render a ``fast`` job and watch it reach 100 % with the result shown; start a long
``optimize`` job, see its live preview, cancel it; paint two regions for a ``masked`` job
and render it; look at the gallery (before/after, never another tenant's job) and the
farm view. Screenshots of each screen are taken at 1280x800; with
``STYLEFARM_STUDIO_SCREENSHOTS=<dir>`` they are also written there (that is how
``docs/screenshots`` is made).
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from shared.imaging import png_bytes

from harness import Farm, RedisServer, start_farm

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

BROWSER_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 800}
KEY_A, KEY_B = "studio-key-acme", "studio-key-globex"
MAX_SCREENSHOT_BYTES = 200_000


@pytest.fixture(scope="module")
def studio_farm(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    """One worker, two tenants' keys, a preview every 1 % of the steps."""
    farm = start_farm("sqlite-local", home=tmp_path_factory.mktemp("studio-farm"), redis=redis_server, workers=1,
                      extra_env={"STYLEFARM_API_KEYS": f"{KEY_A}=acme,{KEY_B}=globex",
                                 "STYLEFARM_PREVIEW_EVERY": "0.01"})
    try:
        yield farm
    finally:
        farm.close()


@pytest.fixture(scope="module")
def browser_page() -> Iterator[object]:
    """A Chromium page at 1280x800 with a fresh profile; skips when there is no browser."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("no 'chromium' on PATH (apt-get install -y chromium; deploy/test.sh does it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    profile = tempfile.mkdtemp(prefix="stylefarm-chromium-")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=executable, args=BROWSER_ARGS, headless=True, viewport=VIEWPORT,
            bypass_csp=True,  # lets the test evaluate its own probes; the page itself needs no eval
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(60_000)
            page.errors = []  # type: ignore[attr-defined]
            page.on("pageerror", lambda exc: page.errors.append(str(exc)))  # type: ignore[attr-defined]
            yield page
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


def content_png() -> bytes:
    from skimage import data

    return png_bytes(Image.fromarray(data.astronaut()).resize((256, 256), Image.BILINEAR))


def screenshot(page, name: str, shots: Path) -> None:
    """A 1280x800 screenshot, palette-reduced so it stays small; copied to
    ``STYLEFARM_STUDIO_SCREENSHOTS`` when set."""
    img = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
    assert img.size == (VIEWPORT["width"], VIEWPORT["height"])
    buf = io.BytesIO()
    img.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(buf, format="PNG", optimize=True)
    assert len(buf.getvalue()) <= MAX_SCREENSHOT_BYTES, f"{name}: {len(buf.getvalue())} bytes"
    extra = os.environ.get("STYLEFARM_STUDIO_SCREENSHOTS")
    targets = [shots] + ([Path(extra)] if extra else [])
    for folder in targets:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.png").write_bytes(buf.getvalue())


def watch_cards(page) -> None:
    """Record every status and progress value the job cards show (for the assertions)."""
    page.evaluate("""() => {
        window.seen = {};
        const note = (card) => {
            const id = card.dataset.jobId, bar = card.querySelector('.bar');
            if (!id) return;
            const list = (window.seen[id] ||= []);
            const entry = card.dataset.status + ':' + bar.getAttribute('aria-valuenow');
            if (list[list.length - 1] !== entry) list.push(entry);
        };
        new MutationObserver((records) => records.forEach((r) => {
            const card = r.target.closest && r.target.closest('li.job');
            if (card) note(card);
            r.addedNodes.forEach((n) => n.matches && n.matches('li.job') && note(n));
        })).observe(document.getElementById('job-list'),
                    {subtree: true, childList: true, attributes: true,
                     attributeFilter: ['data-status', 'aria-valuenow']});
    }""")


def choose_method(page, method: str) -> None:
    page.locator(f"input[name=method][value={method}]").check()


def set_param(page, name: str, value: object) -> None:
    field = page.locator(f"#param-{name}")
    if not field.is_visible():
        page.locator("#params details summary").click()
    field.fill(str(value))


def card(page, job_id: str):
    return page.locator(f"li.job[data-job-id='{job_id}']")


def submit_and_get_id(page) -> str:
    before = set(page.eval_on_selector_all("li.job", "els => els.map(e => e.dataset.jobId)"))
    page.locator("#submit").click()
    page.wait_for_function(
        "n => document.querySelectorAll('li.job').length > n || !document.getElementById('form-error').hidden",
        arg=len(before),
    )
    error = page.locator("#form-error")
    assert error.is_hidden(), error.text_content()
    ids = page.eval_on_selector_all("li.job", "els => els.map(e => e.dataset.jobId)")
    (new,) = [i for i in ids if i not in before]
    return new


def test_studio_renders_watches_cancels_paints_and_lists_jobs(
    studio_farm: Farm, browser_page, tmp_path: Path
) -> None:
    page = browser_page
    shots = tmp_path / "screenshots"
    api = httpx.Client(base_url=studio_farm.api_url, headers={"X-API-Key": KEY_A}, timeout=30)
    # given another tenant's finished job (the page must never show it)
    other = httpx.Client(base_url=studio_farm.api_url, headers={"X-API-Key": KEY_B}, timeout=30)
    other_content = other.post("/v1/inputs", files={"file": ("o.png", content_png(), "image/png")}).json()["id"]
    other_job = other.post("/v1/jobs", json={"method": "fast", "content": other_content, "size": 64}).json()["id"]

    # when the page is opened without a key, expect it to ask for one
    page.goto(studio_farm.api_url + "/")
    page.wait_for_selector("#banner:not([hidden])")
    assert "API key" in page.locator("#banner").text_content()
    # and once the key is saved, the built-in styles' thumbnails appear
    page.fill("#api-key", KEY_A)
    page.locator("#key-form button[type=submit]").click()
    page.wait_for_function(
        "document.querySelectorAll('#thumbs .thumb img').length > 0 && "
        "[...document.querySelectorAll('#thumbs .thumb img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    assert page.locator("#banner").is_hidden()
    assert page.evaluate("localStorage.getItem('stylefarm.apiKey')") == KEY_A
    n_styles = len(api.get("/v1/models/multistyle26").json()["style_names"])
    assert page.locator("#thumbs .thumb").count() == n_styles
    # the parameter defaults come from the API's spec schemas
    assert page.input_value("#param-size") == "512" and page.input_value("#param-strength") == "1"
    watch_cards(page)

    # --- a fast job: progress to 100 % and the result image ---
    page.set_input_files("#content-file", {"name": "astronaut.png", "mimeType": "image/png", "buffer": content_png()})
    page.wait_for_selector("#content-meta:has-text('256\u00d7256')")  # the page writes WxH with a multiplication sign
    page.locator("#thumbs .thumb[data-style='3']").click()
    assert page.get_attribute("#thumbs .thumb[data-style='3']", "aria-pressed") == "true"
    set_param(page, "size", 192)
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "1-new-job", shots)
    fast_id = submit_and_get_id(page)
    fast = card(page, fast_id)
    fast.locator(".job-image img[alt^='Result']").wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                           arg=fast.locator(".job-image img").element_handle())
    assert fast.get_attribute("data-status") == "succeeded"
    assert fast.locator(".pct").text_content() == "100 %"
    assert fast.locator(".bar").get_attribute("aria-valuenow") == "100"
    job = api.get(f"/v1/jobs/{fast_id}").json()
    assert job["status"] == "succeeded" and job["spec"]["style"] == 3 and job["spec"]["size"] == 192
    natural = fast.locator(".job-image img").evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert natural == [job["result"]["width"], job["result"]["height"]] == [192, 192]
    seen = page.evaluate("window.seen")[fast_id]
    assert seen[-1] == "succeeded:100" and seen[0].split(":")[0] in ("queued", "running"), seen
    screenshot(page, "2-fast-succeeded", shots)

    # --- a long optimize job: live previews, then cancel ---
    choose_method(page, "optimize")
    assert page.input_value("#param-steps") == "300"  # OptimizeSpec's default
    page.locator("#thumbs .thumb[data-style='7']").click()  # becomes an uploaded style image
    page.wait_for_selector("#chosen .style-row")
    set_param(page, "size", 128)
    set_param(page, "steps", 4000)
    opt_id = submit_and_get_id(page)
    opt = card(page, opt_id)
    opt.locator("figcaption:has-text('Preview')").wait_for(timeout=120_000)
    page.wait_for_function("el => parseInt(el.textContent.split('step ')[1]) >= 60",
                           arg=opt.locator("figcaption").element_handle(), timeout=120_000)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                           arg=opt.locator(".job-image img").element_handle())
    assert opt.get_attribute("data-status") == "running"
    page.wait_for_function("el => el.textContent.includes('step')", arg=opt.locator(".stage").element_handle())
    screenshot(page, "3-optimize-preview", shots)
    opt.locator("button.cancel").click()
    page.wait_for_selector(f"li.job[data-job-id='{opt_id}'][data-status='canceled']", timeout=60_000)
    assert opt.locator(".badge").text_content() == "canceled" and opt.locator("button.cancel").is_hidden()
    assert api.get(f"/v1/jobs/{opt_id}").json()["status"] == "canceled"
    assert page.evaluate("window.seen")[opt_id][-1].startswith("canceled:")

    # --- a masked job with two painted regions ---
    choose_method(page, "masked")
    page.locator("#chosen .style-row").first.wait_for()  # the optimize style carries over as region 1
    page.locator("#thumbs .thumb[data-style='12']").click()
    page.wait_for_function("document.querySelectorAll('#chosen .style-row').length === 2")
    page.locator("#mask-fill").click()  # region 2 (active after adding it) everywhere...
    page.locator("#chosen input[name=region]").first.check()  # ...then region 1 on the left
    page.eval_on_selector("#brush-size", "el => { el.value = '160'; el.dispatchEvent(new Event('input')); }")
    page.locator("#content-view").scroll_into_view_if_needed()
    box = page.locator("#mask-canvas").bounding_box()
    page.mouse.move(box["x"] + 30, box["y"] + 20)
    page.mouse.down()
    for y in range(20, int(box["height"]), 30):
        page.mouse.move(box["x"] + 30, box["y"] + y)
        page.mouse.move(box["x"] + box["width"] * 0.35, box["y"] + y)
    page.mouse.up()
    coverage = page.locator("#chosen .style-row .meta").all_text_contents()
    painted = [float(t.split()[1]) for t in coverage]
    assert all(p > 10 for p in painted) and 95 < sum(painted) <= 100.1, coverage
    set_param(page, "size", 128)
    set_param(page, "steps", 20)
    page.eval_on_selector("#content-view", "el => { el.scrollIntoView({block: 'start'}); window.scrollBy(0, -12); }")
    screenshot(page, "4-masked-painting", shots)
    masked_id = submit_and_get_id(page)
    page.wait_for_selector(f"li.job[data-job-id='{masked_id}'][data-status='succeeded']", timeout=180_000)
    regions = api.get(f"/v1/jobs/{masked_id}").json()["spec"]["regions"]
    assert len(regions) == 2 and regions[0]["mask"] != regions[1]["mask"]

    # --- the gallery: this tenant's renders with before/after, not the other tenant's ---
    deadline = time.monotonic() + 60
    while other.get(f"/v1/jobs/{other_job}").json()["status"] != "succeeded":
        assert time.monotonic() < deadline, "the other tenant's job did not finish"
        time.sleep(0.5)
    page.goto(studio_farm.api_url + "/#gallery")
    page.wait_for_selector(f".shot[data-job-id='{masked_id}']")
    page.wait_for_function("[...document.querySelectorAll('.shot img')].every(i => i.complete && i.naturalWidth > 0)")
    shown = page.eval_on_selector_all(".shot", "els => els.map(e => e.dataset.jobId)")
    assert set(shown) == {fast_id, masked_id} and other_job not in shown
    assert page.locator(f".shot[data-job-id='{fast_id}'] img.before").count() == 1
    screenshot(page, "5-gallery", shots)

    # --- the farm view: workers and queues, or "not available" where the server has no such endpoint ---
    page.goto(studio_farm.api_url + "/#farm")
    page.wait_for_function("document.querySelector('#farm-workers').children.length > 0 && "
                           "document.querySelector('#farm-queues').children.length > 0")
    for box_id, path in (("#farm-workers", "/v1/workers"), ("#farm-queues", "/v1/queues")):
        text = page.locator(box_id).text_content()
        if api.get(path).status_code == 404:
            assert "Not available" in text
        else:
            assert page.locator(f"{box_id} table").count() == 1
    screenshot(page, "6-farm", shots)
    assert page.errors == []  # type: ignore[attr-defined]
    api.close()
    other.close()
