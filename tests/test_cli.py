"""The ``stylefarm`` CLI: options generated from the spec models, parsing, errors, a real render."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from shared.cli import main as cli
from shared.cli.options import (
    parse_mix_token,
    parse_region_token,
    parse_style_token,
    spec_options,
)
from shared.jobs.methods import REGISTRY, TRAINING_METHODS


@pytest.fixture
def images(tmp_path: Path) -> dict[str, str]:
    content = tmp_path / "content.png"
    style = tmp_path / "style.png"
    mask = tmp_path / "mask.png"
    Image.new("RGB", (64, 48), (200, 120, 40)).save(content)
    Image.new("RGB", (40, 40), (20, 60, 200)).save(style)
    Image.new("L", (64, 48), 255).save(mask)
    return {"content": str(content), "style": str(style), "mask": str(mask), "dir": str(tmp_path)}


def _spec(argv: list[str], capsys) -> dict:
    assert cli.main([*argv, "--print-spec"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


# --- option generation ------------------------------------------------------------------


@pytest.mark.parametrize("method", list(REGISTRY))
def test_every_spec_field_has_an_option(method: str) -> None:
    model = REGISTRY[method].spec
    options = {o.field: o for o in spec_options(model)}
    assert set(options) == set(model.model_fields) - {"method"}
    parser, per_method = cli.build_parser()
    dests = {o.field for o in per_method[method]}
    assert dests == set(model.model_fields) - {"method"}
    # every option is reachable on the real parser under its generated flag
    sub = "train" if method in TRAINING_METHODS else "render"
    name = method.removeprefix("train-") if method in TRAINING_METHODS else method
    help_text = _help_of(parser, sub, name)
    for opt in options.values():
        assert (opt.flags[0] if opt.flags else opt.kwargs["metavar"]) in help_text


def _help_of(parser: argparse.ArgumentParser, *path: str) -> str:
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser.format_help()


def test_help_quotes_the_model_defaults_and_limits() -> None:
    parser, _ = cli.build_parser()
    text = " ".join(_help_of(parser, "render", "optimize").split())
    model = REGISTRY["optimize"].spec
    assert f"default: {model.model_fields['steps'].default}" in text
    assert "<=5000" in text  # MAX_STEPS, quoted from the Field, never restated


@pytest.mark.parametrize("method", list(REGISTRY))
def test_unset_options_leave_the_model_defaults(method: str, images, capsys) -> None:
    argv = {
        "optimize": ["render", "optimize", images["content"], "--style", images["style"]],
        "masked": ["render", "masked", images["content"], "--region", f"{images['style']}:{images['mask']}"],
        "fast": ["render", "fast", images["content"]],
        "adain": ["render", "adain", images["content"], "--style", images["style"]],
        "video": ["render", "video", images["content"]],
        "train-fast": ["train", "fast", "--style", images["style"], "--dataset", images["dir"], "--name", "m"],
        "train-adain": ["train", "adain", "--content-dataset", images["dir"], "--style-dataset", images["dir"],
                        "--name", "m"],
    }[method]
    data = _spec(argv, capsys)
    model = REGISTRY[method].spec
    assert data == json.loads(model.model_validate(data).model_dump_json())
    for name, info in model.model_fields.items():
        if not info.is_required() and name != "method":
            default = info.get_default(call_default_factory=True)
            assert data[name] == (list(default) if isinstance(default, tuple) else default), name


# --- token parsing ----------------------------------------------------------------------


def test_style_token_forms(images) -> None:
    s = images["style"]
    assert parse_style_token(s) == {"image": s}
    assert parse_style_token(f"{s}:0.25") == {"image": s, "weight": 0.25}
    assert parse_style_token(f"{s}:2@{images['mask']}") == {"image": s, "weight": 2.0, "mask": images["mask"]}
    assert parse_style_token(f"{s}@{images['mask']}") == {"image": s, "mask": images["mask"]}
    assert parse_style_token("a:b.jpg") == {"image": "a:b.jpg"}  # not a weight: part of the path
    with pytest.raises(argparse.ArgumentTypeError):
        parse_style_token("")


def test_region_token_forms(images) -> None:
    s, m = images["style"], images["mask"]
    assert parse_region_token(f"{s}:{m}") == {"style": {"image": s}, "mask": m}
    assert parse_region_token(f"{s}:{m}:0.5") == {"style": {"image": s, "weight": 0.5}, "mask": m}
    assert parse_region_token(f"{s}@{m}:{m}") == {"style": {"image": s, "mask": m}, "mask": m}
    for bad in ("only-one-part", f"{s}:", "a:b:c"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_region_token(bad)


def test_mix_token_forms() -> None:
    assert parse_mix_token("3:0.5,12:0.5") == {3: 0.5, 12: 0.5}
    assert parse_mix_token("7") == {7: 1.0}
    for bad in ("", "x:1", "3:y", "3:1,3:2"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_mix_token(bad)


def test_full_option_round_trip(images, capsys) -> None:
    data = _spec(
        ["render", "optimize", images["content"], "--style", f"{images['style']}:0.5@{images['mask']}",
         "--style", images["style"], "--content-layers", "relu4_2,relu3_1", "--seed", "none", "--steps", "7",
         "--optimizer", "adam", "--preserve-color", "luminance"],
        capsys,
    )
    assert data["styles"][0] == {"image": images["style"], "weight": 0.5, "mask": images["mask"]}
    assert data["styles"][1]["weight"] == 1.0
    assert data["content_layers"] == ["relu4_2", "relu3_1"]
    assert data["seed"] is None and data["steps"] == 7 and data["optimizer"] == "adam"

    data = _spec(["render", "masked", images["content"], "--region", f"{images['style']}:{images['mask']}:0.3",
                  "--region", f"{images['style']}:{images['mask']}", "--mode", "composite"], capsys)
    assert [r["style"]["weight"] for r in data["regions"]] == [0.3, 1.0]
    assert data["mode"] == "composite"

    data = _spec(["render", "fast", images["content"], "--mix", "3:0.5,12:0.5", "--preserve-color"], capsys)
    assert data["mix"] == {"3": 0.5, "12": 0.5} and data["preserve_color"] is True

    data = _spec(["render", "adain", images["content"], "--style", images["style"], "--style", images["style"],
                  "--mask", images["mask"], "--mask", images["mask"], "--alpha", "0.5"], capsys)
    assert data["masks"] == [images["mask"]] * 2 and data["alpha"] == 0.5

    data = _spec(["train", "fast", "--style", images["style"], "--style", images["style"], "--style-name", "a",
                  "--style-name", "b", "--dataset", images["dir"], "-o", "/tmp/My Model.pt"], capsys)
    assert data["name"] == "My-Model" and data["style_names"] == ["a", "b"]


# --- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--steps", "0"], "--steps: Input should be greater than or equal to 1"),
        (["--style", "{style}:500"], "--style #2 (weight): Input should be less than or equal to 100"),
        (["--size", "9000"], "--size"),
        (["--init", "sky"], "invalid choice: 'sky'"),
        (["--steps", "many"], "'many' is not an integer"),
        (["--style-layers", "relu9_9"], "unknown relu9_9"),
    ],
)
def test_invalid_options_exit_2_with_a_clear_message(images, capsys, extra, needle) -> None:
    argv = ["render", "optimize", images["content"], "--style", images["style"], "-o", "/tmp/x.png"]
    argv += [a.format(**images) for a in extra]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert "Traceback" not in err


def test_spec_level_errors_exit_2(images, capsys) -> None:
    assert cli.main(["render", "fast", images["content"], "--style", "1", "--mix", "2:1", "-o", "/tmp/x.png"]) == 2
    assert "give either style or mix, not both" in capsys.readouterr().err
    assert cli.main(["render", "adain", images["content"], "--style", images["style"], "--mask", images["mask"],
                     "--mask", images["mask"], "-o", "/tmp/x.png"]) == 2
    assert "give one per style" in capsys.readouterr().err
    assert cli.main(["render", "optimize", "--style", images["style"], "-o", "/tmp/x.png"]) == 2
    assert "CONTENT: Field required" in capsys.readouterr().err


def test_missing_files_and_output_are_usage_errors(images, capsys) -> None:
    assert cli.main(["render", "fast", "/nonexistent/photo.png", "-o", "/tmp/x.png"]) == 2
    assert "/nonexistent/photo.png: no such file" in capsys.readouterr().err
    assert cli.main(["render", "fast", images["content"]]) == 2
    assert "-o/--output is required" in capsys.readouterr().err
    assert cli.main(["render", "fast", images["content"], "-o", "/tmp/out.xyz"]) == 2
    assert "unknown image type" in capsys.readouterr().err


def test_stylefarm_errors_exit_1(images, capsys, monkeypatch) -> None:
    from shared.errors import ModelUnavailable

    def refuse(spec, ctx):
        raise ModelUnavailable("no trained AdaIN decoder is installed")

    monkeypatch.setattr("shared.engine.run_engine", refuse)
    out = Path(images["dir"]) / "o.png"
    assert cli.main(["render", "adain", images["content"], "--style", images["style"], "-o", str(out), "-q"]) == 1
    assert "model unavailable: no trained AdaIN decoder is installed" in capsys.readouterr().err
    assert not out.exists()


def test_cancel_flag_stops_the_job_cleanly(images, capsys, monkeypatch) -> None:
    import os
    import signal

    def job(spec, ctx):  # Ctrl-C arrives mid-job; the engine sees the flag at its next check
        ctx.report(1, 10, stage="work")
        os.kill(os.getpid(), signal.SIGINT)
        ctx.check_cancel()
        raise AssertionError("the cancel flag was not set")

    monkeypatch.setattr("shared.engine.run_engine", job)
    argv = ["render", "fast", images["content"], "-o", str(Path(images["dir"]) / "o.png")]
    assert cli.main(argv) == 130
    assert "canceled" in capsys.readouterr().err


def test_passthrough_commands_are_listed(capsys) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("render", "train", "styles", "up", "demo", "migrate", "worker", "api", "sweep"):
        assert name in out


def test_worker_command_execs_celery_with_the_configured_queues(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(cli, "_need_module", lambda name, what: None)
    monkeypatch.setattr(cli.os, "execv", lambda exe, argv: calls.append(argv))
    assert cli.main(["worker", "--loglevel", "info"]) == 0
    from shared.settings import get_settings

    argv = calls[0]
    assert argv[1:6] == ["-m", "celery", "-A", "worker.celery_app", "worker"]
    assert argv[argv.index("-Q") + 1] == get_settings().worker_queues
    assert argv[argv.index("--concurrency") + 1] == "1" and argv[-2:] == ["--loglevel", "info"]


def test_sweep_command_runs_the_sweeper_module() -> None:
    """Given the installed CLI, when an operator asks for ``stylefarm sweep --help``, then the
    sweeper's own options answer (one pass by default, ``--loop`` to keep sweeping)."""
    entry = "import sys; from shared.cli.main import main; sys.exit(main())"
    done = subprocess.run([sys.executable, "-c", entry, "sweep", "--help"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 0, done.stderr
    assert "--loop" in done.stdout and "--queued-after" in done.stdout


# --- real renders -----------------------------------------------------------------------

needs_fast = pytest.mark.skipif(importlib.util.find_spec("shared.engine.methods.fast") is None, reason="no fast engine")


@needs_fast
def test_styles_lists_the_builtin_styles(capsys) -> None:
    assert cli.main(["styles", "--json"]) == 0
    styles = json.loads(capsys.readouterr().out)
    assert len(styles) == 26 and styles[0]["index"] == 0 and styles[25]["index"] == 25
    assert all(s["name"] for s in styles)


@needs_fast
def test_tiny_real_fast_render(images, capsys) -> None:
    out = Path(images["dir"]) / "fast.png"
    assert cli.main(["render", "fast", images["content"], "--size", "32", "--style", "3", "-o", str(out)]) == 0
    with Image.open(out) as img:
        assert img.format == "PNG" and img.mode == "RGB"
        assert img.size == (32, 24)  # 64x48 content, longest side 32
    assert "wrote" in capsys.readouterr().err


@needs_fast
def test_out_of_range_style_index_is_an_error(images, capsys) -> None:
    out = Path(images["dir"]) / "fast.png"
    # 30: within the spec's bound (0..63) but past the built-in model's 26 styles
    code = cli.main(["render", "fast", images["content"], "--size", "32", "--style", "30", "-o", str(out), "-q"])
    assert code == 2
    assert "out of range" in capsys.readouterr().err
    # 99: past every model's styles, refused by the spec itself
    assert cli.main(["render", "fast", images["content"], "--style", "99", "-o", str(out), "-q"]) == 2
    assert "less than or equal to 63" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("shared.engine.training.train_fast") is None, reason="no fast trainer")
def test_tiny_real_train_fast_writes_a_usable_checkpoint(images, tmp_path, capsys) -> None:
    data = tmp_path / "dataset"
    data.mkdir()
    import numpy as np

    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(data / f"{i}.png")
    ckpt = tmp_path / "tiny.pt"
    argv = ["train", "fast", "--style", images["style"], "--style-name", "blue", "--dataset", str(data),
            "--steps", "2", "--batch-size", "1", "--image-size", "32", "--style-size", "32", "-o", str(ckpt), "-q"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert ckpt.is_file() and not (tmp_path / "tiny.pt.work").exists()
    out = tmp_path / "out.png"
    argv = ["render", "fast", images["content"], "--model", str(ckpt), "--size", "32", "-o", str(out), "-q"]
    assert cli.main(argv) == 0
    assert Image.open(out).size == (32, 24)
