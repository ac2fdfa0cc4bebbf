"""The speed-up of two worker processes on one video job split into chunks (issue 11).

    python bench/video_speedup.py [--frames 96] [--size 192] [--chunk 12] [--styles 2] [--rounds 2]

A clip is generated here (``shared.engine.video.clips``: a virtual camera over scikit-image's
astronaut with the cat crossing it, a tone as sound; nothing is downloaded). The ``video`` job's
own splitter (``shared.engine.methods.video.split``) cuts it into overlapping chunks, and the
chunks (``run_piece``, every style each) run on 1 and on 2 worker processes (``multiprocessing``,
one torch thread each, like the farm's workers on this machine), interleaved ``--rounds``
times; the best time of each is kept. The assembly runs once and checks the videos it makes.

Goal (exit 1 when missed): 2 processes at least 1.5x faster than 1. On a 2-core machine the
ceiling is 2x, less the chunks' warm-up frames and whatever else shares the cores (the load
average is printed).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

GOAL = 1.5


def _ctx(clip: bytes, work: Path) -> Any:
    from shared.engine.context import EngineContext

    return EngineContext(read_input={"clip": clip}.__getitem__, device="cpu", precision="fp32", work_dir=work)


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def _run_piece(args: tuple[Any, Any, bytes]) -> float:
    from shared.engine.methods import video

    spec, piece, clip = args
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        video.run_piece(spec, piece, _ctx(clip, Path(tmp)))
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--frames", type=int, default=96)
    ap.add_argument("--size", type=int, default=192, help="clip width (height = 3/4) and output size")
    ap.add_argument("--chunk", type=int, default=12, help="kept frames per chunk")
    ap.add_argument("--styles", type=int, default=2, help="fast styles, one video each")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)

    from bench.common import machine, print_machine
    from shared.engine.fanout import PieceOutput
    from shared.engine.methods import video
    from shared.engine.video import media
    from shared.engine.video.clips import camera_frames, write_clip
    from shared.jobs.specs import VideoSpec

    print_machine(machine())
    clip = write_clip(camera_frames(args.size, args.size * 3 // 4, args.frames), 24, "mp4", tone_hz=330.0)
    spec = VideoSpec(content="clip", size=args.size, styles=[3, 17, 19, 7][: args.styles], chunk_frames=args.chunk)
    with tempfile.TemporaryDirectory() as tmp:
        plan = video.split(spec, _ctx(clip, Path(tmp)))
    if plan is None:
        print("the clip is one chunk: nothing to split", file=sys.stderr)
        return 2
    work = [(spec, p, clip) for p in plan.pieces]
    print(f"{args.frames} frames at {args.size} px, {len(spec.outputs())} styles, {len(work)} chunks of "
          f"{args.chunk} kept frames (+ warm-up)")

    times: dict[int, list[float]] = {1: [], 2: []}
    ctx_mp = mp.get_context("spawn")
    for _ in range(args.rounds):
        for n in (1, 2):  # interleaved: the machine's load hits both alike
            with ctx_mp.Pool(n, initializer=_worker_init) as pool:
                pool.map(_run_piece, work[:n])  # warm: import torch, load the model in each process
                t0 = time.perf_counter()
                pool.map(_run_piece, work, chunksize=1)
                times[n].append(time.perf_counter() - t0)

    # the assembled videos are whole: every input frame, the input's rate
    with tempfile.TemporaryDirectory() as tmp:
        ctx = _ctx(clip, Path(tmp))
        results = [video.run_piece(spec, p, ctx) for p in plan.pieces]
        outputs = [PieceOutput(i, p.label, p.data, r.metrics, r.files.__getitem__)
                   for i, (p, r) in enumerate(zip(plan.pieces, results, strict=True))]
        assembled = video.assemble(spec, outputs, ctx)
    info = media.stream_info(clip)
    assert all(v.frames == info.frames for v in assembled.videos), [v.frames for v in assembled.videos]

    one, two = min(times[1]), min(times[2])
    print(f"1 process {one:.1f} s, 2 processes {two:.1f} s (best of {args.rounds}, interleaved): "
          f"speed-up {one / two:.2f}x (goal >= {GOAL}x); load now {os.getloadavg()[0]:.1f}")
    print(f"assembled: {len(assembled.videos)} videos of {info.frames} frames each")
    if one / two < GOAL:
        print(f"MISSED: speed-up {one / two:.2f}x < {GOAL}x")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
