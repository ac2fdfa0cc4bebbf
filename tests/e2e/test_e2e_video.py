"""End to end: a video in 3 styles through the real farm (API, Celery workers, PostgreSQL, S3).

Given a clip generated here (moving shapes over a textured background, a 440 Hz tone as its
audio, H.264 + AAC in mp4, 12 frames at 12 fps), uploaded as a video input, when a ``video`` job
asks for 3 styles of the built-in model in chunks of 4 frames, expect the job to fan out into 3
chunk children, succeed once, and give back 3 different videos, each with the input's frame count,
frame rate, duration and audio (still the 440 Hz tone), plus a poster PNG each.
"""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from shared.engine.video import clips, media

from harness import Farm

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

FPS, FRAMES, TONE_HZ = 12, 12, 440.0


def _dominant_hz(mp4: bytes) -> float:
    with av.open(io.BytesIO(mp4)) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        samples = np.concatenate([f.to_ndarray()[0] for f in container.decode(stream)])  # channel 0
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum[1:])) + 1])


def _get(farm: Farm, url: str) -> bytes:
    r = farm.client.get(url, follow_redirects=True)
    assert r.status_code == 200, r.text
    return r.content


@pytest.mark.parametrize("farm", ["postgres-s3"], indirect=True)
def test_given_clip_when_rendered_in_3_styles_expect_3_videos_with_the_inputs_frames_rate_and_audio(
    farm: Farm,
) -> None:
    clip = clips.write_clip(clips.shapes_frames(64, 48, FRAMES, seed=11), FPS, "mp4", tone_hz=TONE_HZ)
    source = media.inspect_encoded(clip)
    assert (source.frames, source.fps) == (FRAMES, Fraction(FPS)) and source.audio_s is not None
    content = farm.upload(clip, "clip.mp4")

    job = farm.create({"method": "video", "content": content, "styles": [0, 9, 17], "size": 64, "chunk_frames": 4})
    done = farm.wait(job["id"], timeout=360)

    assert done["status"] == "succeeded", done["error"]
    children = farm.client.get("/v1/jobs", params={"parent_id": job["id"]}).json()["items"]
    assert len(children) == 3 and all(c["status"] == "succeeded" for c in children), children
    videos = done["result"]["videos"]
    assert [v["name"] for v in videos] == ["style-00", "style-09", "style-17"]
    middles = []
    for v in videos:
        assert (v["frames"], v["fps"], v["width"], v["height"], v["audio"]) == (FRAMES, str(FPS), 64, 48, True)
        mp4 = _get(farm, v["video"])
        check = media.inspect_encoded(mp4)
        assert (check.frames, check.fps, check.width, check.height) == (FRAMES, Fraction(FPS), 64, 48)
        assert check.duration_s == pytest.approx(source.duration_s)
        assert check.audio_s is not None and abs(check.audio_s - source.audio_s) < 0.06
        assert abs(_dominant_hz(mp4) - TONE_HZ) < 5.0  # the input's sound, not silence or noise
        poster = Image.open(io.BytesIO(_get(farm, v["poster"])))
        assert poster.format == "PNG" and poster.size == (64, 48)
        middles.append(media.decode_frames(mp4)[FRAMES // 2].astype(float))
    assert min(np.abs(a - b).mean() for i, a in enumerate(middles) for b in middles[i + 1 :]) > 8.0
    assert Image.open(io.BytesIO(farm.result_png(job["id"]))).size == (64, 48)  # /result: the first poster
