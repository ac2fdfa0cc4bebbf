"""``stylefarm``: the command line of the farm.

- ``stylefarm render <method> CONTENT [options] -o out.png``: one job in this process, no
  servers; the options are generated from the method's spec model (``shared.cli.options``).
- ``stylefarm train <fast|adain> [options] -o model.pt``: a training job, checkpoint to ``-o``;
  resumable (rerun the same command after a stop or Ctrl-C), ``--max-minutes`` trains in
  time-boxed stretches.
  Both offer every method of the registry (``shared.jobs.methods``; ``command_of``).
- ``stylefarm styles``: the built-in styles of the fast model.
- ``stylefarm submit | status | wait | result | cancel | jobs | models | workers``: a farm
  through its API (``shared.cli.remote``; ``submit METHOD`` takes the options of ``render``).
- ``stylefarm up | demo | migrate | worker | api``: the services (imported lazily, so
  ``render`` works in an install without them).
- ``stylefarm keys create|list|revoke|generate``, ``stylefarm tenants set-limits|show``: the
  operator's tenant administration (``shared.cli.keys``, ``shared.cli.tenants``).

Exit codes: 0 done, 1 a stylefarm error (message on stderr), 2 invalid input (bad option,
invalid spec, missing file), 130 canceled with Ctrl-C; the remote commands add 3 to 5
(``shared.cli.remote.EXIT_CODES``, shown by ``stylefarm --help``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, get_args

from shared.cli import remote
from shared.cli.options import FieldOption, add_spec_arguments, describe_errors, spec_data
from shared.errors import InvalidImage, InvalidSpec, JobCanceled, StylefarmError
from shared.jobs.methods import REGISTRY, Method, parse_spec

PROG = "stylefarm"
# What ``render -o`` writes: the image types that keep every RGB colour (a GIF would be
# quantized to 256), so it differs on purpose from ``shared.imaging.IMAGE_SUFFIXES`` (inputs).
OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
EXIT_ERROR, EXIT_USAGE, EXIT_CANCELED = 1, 2, 130


def _err(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr)


# --- parser -------------------------------------------------------------------------------


def _run_options(p: argparse.ArgumentParser) -> None:
    from shared.settings import Settings, get_settings

    fields = Settings.model_fields
    try:
        device, precision = get_settings().device, get_settings().precision
    except Exception:  # invalid service settings (e.g. production secrets unset) do not block a local render
        device, precision = fields["device"].default, fields["precision"].default
    g = p.add_argument_group("run")
    g.add_argument("--device", default=device,
                   help=f"auto | cpu | cuda | cuda:N (default: {device}, from STYLEFARM_DEVICE)")
    g.add_argument("--precision", choices=get_args(fields["precision"].annotation), default=precision,
                   help=f"network precision (default: {precision}, from STYLEFARM_PRECISION)")
    g.add_argument("--threads", type=int, default=None, metavar="N", help="torch CPU threads (default: torch's choice)")
    g.add_argument("--print-spec", action="store_true", help="print the validated JSON spec and exit")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def command_of(method: Method) -> tuple[str, str]:
    """The CLI words of a method: ``("render", "optimize")``, ``("train", "fast")`` for train-fast."""
    return ("train", method.name.removeprefix("train-")) if method.trains else ("render", method.name)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, list[FieldOption]]]:
    """The full parser, and the generated field options of every method."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Neural style transfer render farm.",
        epilog=remote.EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    options: dict[str, list[FieldOption]] = {}

    render = sub.add_parser("render", help="stylize an image in this process (no servers)",
                            description="Stylize one image in this process with a progress bar.")
    train = sub.add_parser("train", help="train a model in this process; checkpoint to -o",
                           description="Train a fast (multi-style) network or an AdaIN decoder.")
    method_subs = {
        "render": render.add_subparsers(dest="method", metavar="METHOD", required=True),
        "train": train.add_subparsers(dest="method", metavar="KIND", required=True),
    }
    for method in REGISTRY.values():
        command, word = command_of(method)
        doc = (method.spec.__doc__ or "").strip().splitlines()[0]
        aliases = [method.name] if word != method.name else []
        p = method_subs[command].add_parser(word, aliases=aliases, help=doc, description=doc)
        p.set_defaults(method=method.name)
        options[method.name] = add_spec_arguments(p, method.spec)
        if method.trains:
            p.add_argument("-o", "--output", type=Path, help="where to write the checkpoint (.pt)")
            p.add_argument("--work-dir", type=Path,
                           help="scratch folder for checkpoints during training (default: OUTPUT.work, removed on "
                                "success); a run whose work dir holds checkpoint.pt resumes from it")
            p.add_argument("--max-minutes", type=float, default=None, metavar="M",
                           help="stop cleanly after M minutes of training (checkpoint kept, -o written); "
                                "rerun the same command to go on")
            p.add_argument("--loss-curve", type=Path, default=None, metavar="PATH",
                           help="also write the loss curve (PNG) here")
        else:
            p.add_argument("-o", "--output", type=Path, help="output image (.png, .jpg, .webp...)")
        _run_options(p)

    styles = sub.add_parser("styles", help="list the built-in styles of the fast model")
    styles.add_argument("--json", action="store_true", help="print JSON instead of a table")
    remote.add_commands(sub)

    for name, text in PASSTHROUGH_HELP.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser, options


# --- render / train -----------------------------------------------------------------------


def _spec_from_args(args: argparse.Namespace, options: list[FieldOption]) -> Any:
    data = spec_data(args, options)
    if REGISTRY[args.method].trains and "name" not in data and args.output is not None:
        data["name"] = re.sub(r"[^A-Za-z0-9._-]+", "-", args.output.stem) or "model"
    return parse_spec({"method": args.method, **data})


def _invalid_spec(args: argparse.Namespace, exc: InvalidSpec, options: list[FieldOption]) -> int:
    where = f"{args.command} {args.method.removeprefix('train-') if args.command == 'train' else args.method}"
    lines = describe_errors(exc.extra.get("errors", []), options, args.method) or [exc.detail]
    print(f"{PROG} {where}: invalid options:", file=sys.stderr)
    for line in lines:
        print(f"  {line}", file=sys.stderr)
    print(f"(see '{PROG} {where} --help')", file=sys.stderr)
    return EXIT_USAGE


def _format_metrics(metrics: dict[str, Any]) -> str:
    parts = []
    for k, v in metrics.items():
        if isinstance(v, float):
            parts.append(f"{k}={v:.4g}")
        elif isinstance(v, (int, str, bool)):
            parts.append(f"{k}={v}")
    return " ".join(parts)


def _cmd_run(args: argparse.Namespace, options: list[FieldOption]) -> int:
    from shared.cli.local_run import check_local_refs, run_local

    try:
        spec = _spec_from_args(args, options)
    except InvalidSpec as exc:
        return _invalid_spec(args, exc, options)
    if args.print_spec:
        print(spec.model_dump_json(indent=2))
        return 0
    if args.output is None:
        _err(f"{args.command} {args.method}: -o/--output is required (or use --print-spec)")
        return EXIT_USAGE
    training = REGISTRY[spec.method].trains
    is_video = spec.method == "video"
    if is_video and args.output.suffix.lower() != ".mp4":
        _err(f"-o {args.output}: a video job writes H.264 mp4; end the name with .mp4")
        return EXIT_USAGE
    if not training and not is_video and args.output.suffix.lower() not in OUTPUT_SUFFIXES:
        _err(f"-o {args.output}: unknown image type; end the name with one of {', '.join(OUTPUT_SUFFIXES)}")
        return EXIT_USAGE
    try:
        check_local_refs(spec)
    except InvalidImage as exc:
        _err(exc.detail)
        return EXIT_USAGE

    work_dir: Path | None = None
    own_work_dir = False
    if training:
        work_dir = args.work_dir or args.output.with_name(args.output.name + ".work")
        own_work_dir = args.work_dir is None
        work_dir.mkdir(parents=True, exist_ok=True)

    max_minutes = getattr(args, "max_minutes", None)
    started = time.perf_counter()
    try:
        result = run_local(
            spec,
            device=args.device,
            precision=args.precision,
            work_dir=work_dir,
            progress=not args.quiet,
            threads=args.threads,
            max_seconds=None if max_minutes is None else 60.0 * max_minutes,
        )
    except JobCanceled:
        if training:
            _err(f"canceled; rerun the same command to resume from the last checkpoint in {work_dir}")
            return EXIT_CANCELED
        raise
    seconds = time.perf_counter() - started
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if training:
        assert work_dir is not None  # every training run has one (above)
        if Path(result.checkpoint).resolve() != args.output.resolve():
            shutil.copyfile(result.checkpoint, args.output)
        if args.loss_curve is not None and result.loss_curve_png:
            args.loss_curve.parent.mkdir(parents=True, exist_ok=True)
            args.loss_curve.write_bytes(result.loss_curve_png)
        finished = result.metrics.get("steps", spec.steps) >= spec.steps
        if own_work_dir and finished:
            shutil.rmtree(work_dir, ignore_errors=True)
        names = f" styles: {', '.join(result.style_names)}" if result.style_names else ""
        summary = f"wrote {args.output} ({result.kind} checkpoint) in {seconds:.1f}s.{names}"
        print(f"{summary}  {_format_metrics(result.metrics)}", file=sys.stderr)
        if not finished:
            steps = f"step {result.metrics['steps']} of {spec.steps}"
            _err(f"stopped at {steps} (--max-minutes); rerun the same command to go on from "
                 f"{work_dir / 'checkpoint.pt'}")
    elif is_video:
        for video in result.videos:  # one output: the path given; several: <stem>-<output>.mp4
            path = args.output if len(result.videos) == 1 else args.output.with_name(
                f"{args.output.stem}-{video.name}.mp4")
            path.write_bytes(video.video)
            video.poster.save(path.with_suffix(".png"))
            print(f"wrote {path} and its poster ({video.width}x{video.height}, {video.frames} frames at "
                  f"{video.fps} fps, audio {'yes' if video.audio else 'none'})", file=sys.stderr)
        print(f"in {seconds:.1f}s  {_format_metrics(result.metrics)}".rstrip(), file=sys.stderr)
    else:
        result.image.save(args.output)
        w, h = result.image.size
        print(f"wrote {args.output} ({w}x{h}) in {seconds:.1f}s  {_format_metrics(result.metrics)}".rstrip(),
              file=sys.stderr)
    return 0


# --- styles -------------------------------------------------------------------------------


def builtin_styles() -> list[tuple[int, str]]:
    """(index, name) of every style of the built-in fast model."""
    from shared.engine.methods.fast import load_fast_model
    from shared.jobs.specs import BUILTIN_FAST_MODEL

    return list(enumerate(load_fast_model(BUILTIN_FAST_MODEL).style_names))


def _cmd_styles(args: argparse.Namespace) -> int:
    try:
        styles = builtin_styles()
    except ImportError as exc:
        _err(f"the fast engine is not installed ({exc})")
        return EXIT_ERROR
    if args.json:
        print(json.dumps([{"index": i, "name": n} for i, n in styles], indent=2))
    else:
        for i, name in styles:
            print(f"{i:>3}  {name}")
    return 0


# --- services (imported lazily) -----------------------------------------------------------


def _need_module(name: str, what: str) -> None:
    try:
        found = importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        raise StylefarmError(f"{what}: module {name} is not available in this installation")


def _cmd_up(rest: list[str]) -> int:
    from shared.cli.stack import main as stack_main

    return int(stack_main(rest) or 0)


def _cmd_demo(rest: list[str]) -> int:
    from shared.cli.demo import main as demo_main

    return int(demo_main(rest) or 0)


def _cmd_migrate(rest: list[str]) -> int:
    p = argparse.ArgumentParser(prog=f"{PROG} migrate", description="Migrate the database to the newest schema.")
    p.add_argument("--url", help="SQLAlchemy URL (default: the configured STYLEFARM_DATABASE_URL)")
    p.add_argument("--revision", help="target revision (default: head)")
    args = p.parse_args(rest)
    from shared.db import migrate

    kwargs = {k: v for k, v in (("url", args.url), ("revision", args.revision)) if v is not None}
    migrate.upgrade(**kwargs)
    current = migrate.current_revision(args.url) if hasattr(migrate, "current_revision") else None
    print(f"database at revision {current}" if current else "database migrated", file=sys.stderr)
    return 0


def _exec_python_module(argv: list[str]) -> int:
    """Replace this process (signals then go straight to the server)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", *argv])
    return 0  # pragma: no cover - execv does not return


def _cmd_keys(rest: list[str]) -> int:
    from shared.cli.keys import main as keys_main

    return keys_main(rest)


def _cmd_tenants(rest: list[str]) -> int:
    from shared.cli.tenants import main as tenants_main

    return tenants_main(rest)


def _cmd_worker(rest: list[str]) -> int:
    from shared.settings import get_settings

    _need_module("worker.celery_app", "stylefarm worker")
    queues = get_settings().worker_queues
    return _exec_python_module(
        ["celery", "-A", "worker.celery_app", "worker", "-Q", queues, "--concurrency", "1", *rest]
    )


def _cmd_sweep(rest: list[str]) -> int:
    _need_module("worker.sweeper", "stylefarm sweep")
    return _exec_python_module(["worker.sweeper", *rest])


def _cmd_api(rest: list[str]) -> int:
    _need_module("api.main", "stylefarm api")
    return _exec_python_module(["uvicorn", "api.main:app", *rest])


PASSTHROUGH: dict[str, Callable[[list[str]], int]] = {
    "up": _cmd_up,
    "demo": _cmd_demo,
    "migrate": _cmd_migrate,
    "keys": _cmd_keys,
    "tenants": _cmd_tenants,
    "worker": _cmd_worker,
    "api": _cmd_api,
    "sweep": _cmd_sweep,
}
PASSTHROUGH_HELP = {
    "up": "run the whole farm on this machine (Redis, API, workers)",
    "demo": "submit demo jobs and collect the results",
    "migrate": "migrate the database to the newest schema",
    "keys": "API keys stored hashed in SQL: create | list | revoke | generate",
    "tenants": "per-tenant budgets: set-limits | show",
    "worker": "run a Celery worker (extra arguments go to celery)",
    "api": "run the REST API with uvicorn (extra arguments go to uvicorn)",
    "sweep": "requeue expired leases and resend lost messages: one pass, or --loop (worker.sweeper)",
}


# --- entry point --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in PASSTHROUGH:
            return PASSTHROUGH[argv[0]](argv[1:])
        parser, options = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help (0) or a usage error (2, message already printed)
            return int(exc.code or 0)
        if args.command == "styles":
            return _cmd_styles(args)
        if args.command in remote.COMMANDS:
            return remote.run(args)
        return _cmd_run(args, options[args.method])
    except JobCanceled:
        _err("canceled")
        return EXIT_CANCELED
    except KeyboardInterrupt:
        _err("aborted")
        return EXIT_CANCELED
    except BrokenPipeError:  # output piped into head & co.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - replaces stdout until the process exits
        return 0
    except InvalidSpec as exc:
        _err(f"invalid spec: {exc.detail}")
        return EXIT_USAGE
    except StylefarmError as exc:
        _err(f"{exc.title.lower()}: {exc.detail}" if exc.title else exc.detail)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
