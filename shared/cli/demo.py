"""``stylefarm demo``: start the embedded farm, run one job of each method through the REST
API (and a 2048 px render split into tiles), show progress bars, save the results in
``./out/`` and stop everything.

Inputs come from pictures installed packages ship (scikit-image, scikit-learn) and a
procedurally painted style image; nothing is downloaded. The video job renders a 2-second clip
made here (a virtual camera over scikit-image's astronaut, the cat crossing it, a tone as its
sound) in 2 styles, split into 2 pieces (``out/video-<style>.mp4`` and a poster each). A job that is refused or fails
is shown with its problem details, the demo goes on, and it exits 1.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from shared.imaging import png_bytes

FINAL = ("succeeded", "failed", "canceled")


# --- demo images ------------------------------------------------------------------------


def fit(img: Image.Image, longest: int) -> Image.Image:
    scale = longest / max(img.size)
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.LANCZOS)


def painted_swirls(size: int = 256, seed: int = 7) -> Image.Image:
    """A painting-like style image: colour swirls with brush-stroke streaks (numpy only)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    cx, cy = x - 0.5, y - 0.5
    r = np.hypot(cx, cy)
    theta = np.arctan2(cy, cx)
    swirl = theta + 9.0 * r + 0.6 * np.sin(14 * x) * np.cos(11 * y)
    palette = np.array([[238, 178, 36], [27, 66, 140], [199, 52, 38], [240, 233, 208], [32, 120, 96]], np.float32)
    t = (np.sin(3 * swirl) + 1) / 2 * (len(palette) - 1)
    lo = np.floor(t).astype(int)
    hi = np.minimum(lo + 1, len(palette) - 1)
    frac = (t - lo)[..., None]
    rgb = palette[lo] * (1 - frac) + palette[hi] * frac
    strokes = np.sin(60 * (x * np.cos(swirl) + y * np.sin(swirl)) + rng.normal(0, 0.3, (size, size)))
    rgb *= (0.85 + 0.15 * strokes)[..., None]
    rgb += rng.normal(0, 6, rgb.shape)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def halves_mask(size: tuple[int, int], left: bool) -> Image.Image:
    w, h = size
    m = np.zeros((h, w), np.uint8)
    if left:
        m[:, : w // 2] = 255
    else:
        m[:, w // 2 :] = 255
    return Image.fromarray(m)


def ellipse_mask(size: tuple[int, int], inside: bool = True) -> Image.Image:
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    e = ((x - w / 2) / (0.34 * w)) ** 2 + ((y - h / 2) / (0.42 * h)) ** 2 <= 1.0
    return Image.fromarray(((e if inside else ~e) * 255).astype(np.uint8))


def demo_images() -> dict[str, bytes]:
    from skimage import data

    images: dict[str, Image.Image] = {
        "astronaut": Image.fromarray(data.astronaut()),
        "chelsea": Image.fromarray(data.chelsea()),
        "coffee": Image.fromarray(data.coffee()),
        "swirls": painted_swirls(),
    }
    try:
        from sklearn.datasets import load_sample_image

        images["china"] = Image.fromarray(load_sample_image("china.jpg"))
        images["flower"] = Image.fromarray(load_sample_image("flower.jpg"))
    except ImportError:  # scikit-learn is optional for the demo
        images["china"] = images["coffee"]
        images["flower"] = images["coffee"]
    out = {name: png_bytes(fit(img.convert("RGB"), 512)) for name, img in images.items()}
    chelsea_size = fit(images["chelsea"], 512).size
    out["mask-left"] = png_bytes(halves_mask(chelsea_size, left=True))
    out["mask-right"] = png_bytes(halves_mask(chelsea_size, left=False))
    out["mask-ellipse"] = png_bytes(ellipse_mask(fit(images["astronaut"], 512).size))
    return out


#: The demo clip: 2 s at 12 fps, 160 x 120 (short on a CPU).
CLIP_FRAMES, CLIP_FPS, CLIP_WIDTH = 24, 12, 160


def demo_clip() -> bytes:
    """A short mp4 (H.264 + AAC) made here from scikit-image's photos (``shared.engine.video.clips``)."""
    from shared.engine.video.clips import camera_frames, write_clip

    frames = camera_frames(CLIP_WIDTH, CLIP_WIDTH * 3 // 4, CLIP_FRAMES)
    return write_clip(frames, CLIP_FPS, "mp4", tone_hz=330.0)


def demo_jobs(ids: dict[str, str], size: int, steps: int) -> list[tuple[str, dict]]:
    """(label, spec) of one job per method (fast three times: one style, a mix, and a 2048 px
    render that the farm splits into tiles, child jobs any worker renders; a video in 2 styles)."""
    gatys = {"size": size, "steps": steps, "optimizer": "adam", "learning_rate": 4.0,
             "style_layers": ["relu1_1", "relu2_1", "relu3_1", "relu4_1"], "content_layers": ["relu4_1"]}
    return [
        ("optimize",
         {"method": "optimize", "content": ids["astronaut"], "styles": [{"image": ids["swirls"]}], **gatys}),
        ("masked", {
            "method": "masked", "content": ids["chelsea"], **gatys,
            "regions": [
                {"style": {"image": ids["swirls"]}, "mask": ids["mask-left"]},
                {"style": {"image": ids["flower"]}, "mask": ids["mask-right"]},
            ],
        }),
        ("fast-style", {"method": "fast", "content": ids["china"], "size": max(size, 256), "style": 19}),
        ("fast-mix",
         {"method": "fast", "content": ids["astronaut"], "size": max(size, 256), "mix": {"0": 0.5, "7": 0.5}}),
        ("adain", {"method": "adain", "content": ids["chelsea"], "styles": [{"image": ids["swirls"]}],
                   "size": max(size, 256), "style_size": 256}),
        ("fast-tiled", {"method": "fast", "content": ids["china"], "size": 2048, "style": 5}),
        ("video", {"method": "video", "content": ids["clip"], "styles": [19, 7], "size": CLIP_WIDTH,
                   "chunk_frames": CLIP_FRAMES // 2}),
    ]


# --- running ------------------------------------------------------------------------------


@dataclass
class DemoJob:
    label: str
    spec: dict
    id: str | None = None
    status: str = "not submitted"
    problem: dict | None = None
    seconds: float | None = None
    output: Path | None = None
    view: dict = field(default_factory=dict)


def _problem_text(problem: dict | None) -> str:
    if not problem:
        return ""
    title = problem.get("title") or "problem"
    detail = problem.get("detail") or ""
    slug = (problem.get("type") or "").rsplit("/", 1)[-1]
    return f"{title} [{slug}]: {detail}" if slug else f"{title}: {detail}"


def run_demo(
    api_url: str, out_dir: Path, *, size: int, steps: int, timeout: float, quiet: bool = False
) -> list[DemoJob]:
    import httpx
    from tqdm import tqdm

    client = httpx.Client(base_url=api_url, timeout=60)
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    say("uploading demo images (scikit-image / scikit-learn samples, a generated painting)...")
    ids: dict[str, str] = {}
    for name, data in demo_images().items():
        r = client.post("/v1/inputs", files={"file": (f"{name}.png", data, "image/png")})
        if r.status_code not in (200, 201):
            raise RuntimeError(f"upload of {name} failed: {r.status_code} {r.text}")
        ids[name] = r.json()["id"]
    r = client.post("/v1/inputs", files={"file": ("clip.mp4", demo_clip(), "video/mp4")})
    if r.status_code not in (200, 201):
        raise RuntimeError(f"upload of the demo clip failed: {r.status_code} {r.text}")
    ids["clip"] = r.json()["id"]

    jobs = [DemoJob(label, spec) for label, spec in demo_jobs(ids, size, steps)]
    for job in jobs:
        r = client.post("/v1/jobs", json=job.spec, headers={"Idempotency-Key": f"demo-{job.label}-{time.time_ns()}"})
        if r.status_code in (200, 202):
            job.id, job.status = r.json()["id"], r.json()["status"]
        else:
            is_json = r.headers.get("content-type", "").endswith("json")
            job.status, job.problem = "refused", r.json() if is_json else {"detail": r.text}
            say(f"  {job.label}: refused by the API: {_problem_text(job.problem)}")

    bars = {
        j.label: tqdm(total=100, desc=f"{j.label:<10} {j.status:<18}", position=i, leave=True, disable=quiet,
                      bar_format="{desc} |{bar}| {n:3.0f}% {elapsed}")
        for i, j in enumerate(jobs) if j.id
    }
    deadline = time.monotonic() + timeout
    pending = [j for j in jobs if j.id]
    try:
        while pending and time.monotonic() < deadline:
            for job in list(pending):
                r = client.get(f"/v1/jobs/{job.id}")
                if r.status_code != 200:
                    continue
                view = job.view = r.json()
                job.status = view["status"]
                bar = bars[job.label]
                pct = 100.0 * (view["progress"]["fraction"] if job.status != "succeeded" else 1.0)
                bar.n = pct
                stage = view["progress"].get("stage") or ""
                state = f"{job.status} {stage}" if stage and job.status == "running" else job.status
                bar.set_description_str(f"{job.label:<10} {state[:18]:<18}", refresh=False)
                bar.refresh()
                if job.status in FINAL:
                    job.problem = view.get("error") if job.status != "succeeded" else None
                    job.seconds = (view.get("timings") or {}).get("run_seconds")
                    pending.remove(job)
            time.sleep(0.3)
    finally:
        for bar in bars.values():
            bar.close()
    for job in pending:
        job.status = f"timed out ({job.status})"

    out_dir.mkdir(parents=True, exist_ok=True)
    for job in jobs:
        if job.status == "succeeded":
            r = client.get(f"/v1/jobs/{job.id}/result", follow_redirects=True)
            if r.status_code == 200:
                path = out_dir / f"{job.label}.png"
                Image.open(io.BytesIO(r.content)).save(path)  # decode + re-save: proves it is an image
                job.output = path
            for v in (job.view.get("result") or {}).get("videos") or []:
                r = client.get(v["video"], follow_redirects=True)
                if r.status_code == 200:
                    (out_dir / f"{job.label}-{v['name']}.mp4").write_bytes(r.content)
                    job.output = out_dir / f"{job.label}-{v['name']}.mp4"
    client.close()
    return jobs


def print_summary(jobs: list[DemoJob], out_dir: Path) -> None:
    print()
    print(f"{'job':<11}{'status':<12}{'seconds':>8}  output / problem")
    print("-" * 78)
    for j in jobs:
        secs = f"{j.seconds:.1f}" if j.seconds is not None else "-"
        what = str(j.output) if j.output else _problem_text(j.problem)
        print(f"{j.label:<11}{j.status:<12}{secs:>8}  {what}")
    print()
    print(f"results are in {out_dir.resolve()}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stylefarm demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out"), help="where to save the results (default ./out)")
    parser.add_argument("--size", type=int, default=128, help="output size of the optimization jobs (default 128)")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps of optimize/masked (default 30)")
    parser.add_argument("--timeout", type=float, default=900, help="give up waiting after this many seconds")
    parser.add_argument("--home", type=Path, default=None,
                        help="state folder of the embedded farm (default: a temp dir)")
    parser.add_argument("--api-url", default=None, help="use a farm that is already running instead of starting one")
    args = parser.parse_args(list(argv) if argv is not None else None)

    if args.api_url:
        jobs = run_demo(args.api_url.rstrip("/"), args.out, size=args.size, steps=args.steps, timeout=args.timeout)
        print_summary(jobs, args.out)
        return _exit_code(jobs)

    from shared.cli.stack import EmbeddedStack, StackError, free_port

    home = args.home or Path(tempfile.mkdtemp(prefix="stylefarm-demo-"))
    print(f"starting the embedded farm in {home} (Redis, API, one worker)...", flush=True)
    stack = EmbeddedStack(home, port=free_port(), workers=1)
    try:
        try:
            stack.up()
        except StackError as exc:
            print(f"stylefarm demo: the farm did not start: {exc}", file=sys.stderr)
            return 1
        print(f"farm is up at {stack.api_url}", flush=True)
        try:
            jobs = run_demo(stack.api_url, args.out, size=args.size, steps=args.steps, timeout=args.timeout)
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return 130
        print_summary(jobs, args.out)
        return _exit_code(jobs)
    finally:
        print("stopping the farm...", flush=True)
        stack.stop()
        print(f"stopped; logs kept in {home / 'logs'}", flush=True)


def _exit_code(jobs: list[DemoJob]) -> int:
    """0 when every job succeeded."""
    return 0 if all(j.status == "succeeded" for j in jobs) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
