"""Command-line options generated from the job spec models of ``shared.jobs.specs``.

Every field of a spec model becomes one argparse option; nothing here restates a default
or a limit: help texts quote them from the model, unset options are left out of the dict
handed to ``parse_spec``, so pydantic applies its own defaults and checks its own limits.

Mapping of field types to options:

- ``bool``                      -> ``--flag`` / ``--no-flag``
- ``int`` / ``float`` / ``str`` -> ``--name VALUE`` (``none`` clears a nullable field)
- ``Literal[...]``              -> ``--name {a,b,c}``
- ``tuple[Literal, ...]``       -> ``--name a,b,c`` (comma list, each value checked)
- ``list[StyleRef]``            -> repeatable ``--style PATH[:WEIGHT][@MASK]``
- ``list[Region]``              -> repeatable ``--region STYLE[@STYLE_MASK]:MASK[:WEIGHT]``
- ``list[str]``                 -> repeatable ``--<singular> VALUE``
- ``dict[int, float]``          -> ``--mix 3:0.5,12:0.5``
- ``list[int]``                 -> ``--style 3 --style 7`` (repeated)
- a required ``content`` image  -> the positional ``CONTENT`` argument

An unknown field type raises at parser build time, so a new spec field never goes missing
from the CLI silently (``tests/test_cli.py`` checks every field of every method).
"""

from __future__ import annotations

import argparse
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from shared.jobs.specs import ImageRef, Region, StyleRef

NONE_WORDS = ("none", "null")
IMAGE_REF_DESCRIPTION = get_args(ImageRef)[1].description  # "input id (API) or file path (CLI)"


# --- type introspection ------------------------------------------------------------------


def _strip_annotated(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; anything else -> ``(X, False)``."""
    tp = _strip_annotated(tp)
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(args) < len(get_args(tp)):
            return _strip_annotated(args[0]), True
    return tp, False


def _literal_values(tp: Any) -> tuple | None:
    tp = _strip_annotated(tp)
    return get_args(tp) if get_origin(tp) is Literal else None


# --- token parsers (used as argparse ``type=``; errors become exit 2 with the message) ---


def _float(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} {text!r} is not a number") from None


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_style_token(token: str) -> dict[str, Any]:
    """``PATH[:WEIGHT][@MASK]`` -> StyleRef fields. A path that exists is taken whole."""
    token = token.strip()
    if not token:
        raise argparse.ArgumentTypeError("empty style; use PATH[:WEIGHT][@MASK]")
    if Path(token).expanduser().exists():
        return {"image": token}
    out: dict[str, Any] = {}
    base = token
    if "@" in base:
        base, mask = base.rsplit("@", 1)
        if not mask or not base:
            raise argparse.ArgumentTypeError(f"style {token!r}: use PATH[:WEIGHT][@MASK]")
        out["mask"] = mask
    if ":" in base:
        path, weight = base.rsplit(":", 1)
        if path and _is_float(weight):
            base = path
            out["weight"] = float(weight)
    out["image"] = base
    return {"image": out.pop("image"), **out}


def parse_region_token(token: str) -> dict[str, Any]:
    """``STYLE[@STYLE_MASK]:MASK[:WEIGHT]`` -> Region fields."""
    parts = token.strip().split(":")
    weight: float | None = None
    if len(parts) >= 3 and _is_float(parts[-1]):
        weight = float(parts.pop())
    if len(parts) < 2 or not all(parts):
        raise argparse.ArgumentTypeError(f"region {token!r}: use STYLE_PATH:MASK_PATH[:WEIGHT]")
    split = 1
    if len(parts) > 2:  # a path holds ':'; pick the split whose two halves exist
        for i in range(1, len(parts)):
            left, right = ":".join(parts[:i]), ":".join(parts[i:])
            if Path(left.split("@")[0]).expanduser().exists() and Path(right).expanduser().exists():
                split = i
                break
        else:
            raise argparse.ArgumentTypeError(
                f"region {token!r}: cannot tell the style path from the mask path; use STYLE_PATH:MASK_PATH[:WEIGHT]"
            )
    style_part, mask = ":".join(parts[:split]), ":".join(parts[split:])
    style: dict[str, Any] = {"image": style_part}
    if "@" in style_part and not Path(style_part).expanduser().exists():
        image, style_mask = style_part.rsplit("@", 1)
        if not image or not style_mask:
            raise argparse.ArgumentTypeError(f"region {token!r}: use STYLE[@STYLE_MASK]:MASK[:WEIGHT]")
        style = {"image": image, "mask": style_mask}
    if weight is not None:
        style["weight"] = weight
    return {"style": style, "mask": mask}


def parse_mix_token(token: str) -> dict[int, float]:
    """``3:0.5,12:0.5`` (or ``7`` alone) -> {index: weight}."""
    mix: dict[int, float] = {}
    for part in token.split(","):
        part = part.strip()
        if not part:
            continue
        idx, _, weight = part.partition(":")
        try:
            key = int(idx)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"mix {token!r}: {idx!r} is not a style index; use e.g. 3:0.5,12:0.5"
            ) from None
        if key in mix:
            raise argparse.ArgumentTypeError(f"mix {token!r}: style {key} is named twice")
        mix[key] = _float(weight, f"mix weight of style {key}") if weight else 1.0
    if not mix:
        raise argparse.ArgumentTypeError("empty mix; use e.g. 3:0.5,12:0.5")
    return mix


def _scalar_parser(tp: type, nullable: bool, name: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        if nullable and text.strip().lower() in NONE_WORDS:
            return None
        if tp is str:
            return text
        try:
            return tp(text)
        except ValueError:
            kind = {int: "an integer", float: "a number"}.get(tp, tp.__name__)
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None

    parse.__name__ = name  # argparse names the type in its messages
    return parse


def _list_parser(choices: tuple | None, item: type) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        values = [v.strip() for v in text.split(",") if v.strip()]
        if not values:
            raise argparse.ArgumentTypeError("give at least one value (comma separated)")
        if choices is not None:
            bad = [v for v in values if v not in choices]
            if bad:
                raise argparse.ArgumentTypeError(
                    f"unknown {', '.join(bad)}; choose from {', '.join(map(str, choices))}"
                )
            return tuple(values)
        return tuple(item(v) for v in values)

    parse.__name__ = "comma list"
    return parse


# --- field -> option ----------------------------------------------------------------------


@dataclass
class FieldOption:
    """How one spec field appears on the command line."""

    field: str
    flags: tuple[str, ...]  # ("--steps",) or () for the positional
    kwargs: dict[str, Any]
    metavar_hint: str = ""

    @property
    def display(self) -> str:
        return self.flags[0] if self.flags else self.kwargs.get("metavar", self.field.upper())


def _constraints(info: FieldInfo) -> str:
    words = []
    for m in info.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            v = getattr(m, attr, None)
            if v is not None:
                words.append(f"{sym}{v:g}" if isinstance(v, float) else f"{sym}{v}")
        for attr, label in (("min_length", "min"), ("max_length", "max")):
            v = getattr(m, attr, None)
            if v is not None:
                words.append(f"{label} {v}")
        if getattr(m, "pattern", None):
            words.append(f"pattern {m.pattern}")
    return ", ".join(words)


def _default_text(info: FieldInfo) -> str:
    d = info.default
    if d is PydanticUndefined or info.default_factory is not None:
        return "required" if info.is_required() else ""
    if d is None:
        return ""
    if isinstance(d, tuple):
        return "default: " + ",".join(map(str, d))
    if isinstance(d, bool):
        return "default: " + ("on" if d else "off")
    return f"default: {d:g}" if isinstance(d, float) else f"default: {d}"


def _is_image_ref(info: FieldInfo) -> bool:
    return info.description == IMAGE_REF_DESCRIPTION


def _help(info: FieldInfo, extra: str = "") -> str:
    ref = _is_image_ref(info)  # the CLI takes file paths; the 1024-character limit is noise here
    parts = [p for p in ("" if ref else info.description or "", extra) if p]
    tail = "; ".join(p for p in ("" if ref else _constraints(info), _default_text(info)) if p)
    text = ". ".join(parts)
    if tail:
        text = f"{text} ({tail})" if text else f"({tail})"
    return text.replace("%", "%%")


def _singular(name: str) -> str:
    return name[:-1] if name.endswith("s") else name


def field_option(name: str, info: FieldInfo, taken: set[str]) -> FieldOption:
    """The option of one spec field (``taken``: names of the model's other fields)."""
    tp, nullable = unwrap_optional(info.annotation)
    origin = get_origin(tp)
    flag = "--" + name.replace("_", "-")
    kw: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS}

    if name == "content" and info.is_required() and tp is str:
        return FieldOption(name, (), {"metavar": "CONTENT", "nargs": "?", "default": argparse.SUPPRESS,
                                      "help": _help(info, "the content image (file path)")})
    if tp is bool:
        return FieldOption(name, (flag,), {**kw, "action": argparse.BooleanOptionalAction, "help": _help(info)})
    if (choices := _literal_values(tp)) is not None:
        return FieldOption(name, (flag,), {**kw, "choices": choices, "help": _help(info)})
    if tp in (int, float, str):
        if "dataset" in name:
            metavar = "DIR"
        else:
            metavar = "PATH" if _is_image_ref(info) else {int: "N", float: "X", str: "TEXT"}[tp]
        if nullable:
            metavar += "|none"
        return FieldOption(name, (flag,), {**kw, "type": _scalar_parser(tp, nullable, metavar), "metavar": metavar,
                                           "help": _help(info)})
    if origin is tuple:
        args = get_args(tp)
        item = _strip_annotated(args[0])
        choices = _literal_values(item)
        metavar = "LAYER,..." if choices and all(str(c).startswith("relu") for c in choices) else "A,B,..."
        return FieldOption(name, (flag,), {**kw, "type": _list_parser(choices, item), "metavar": metavar,
                                           "help": _help(info, "comma separated")})
    if origin is dict:
        key, value = (_strip_annotated(a) for a in get_args(tp))
        if (key, value) != (int, float):
            raise TypeError(f"spec field {name}: no CLI mapping for {tp}")
        return FieldOption(name, (flag,), {**kw, "type": parse_mix_token, "metavar": "I:W,...",
                                           "help": _help(info, "e.g. 3:0.5,12:0.5")})
    if origin is list:
        raw_item = get_args(tp)[0]
        item = _strip_annotated(raw_item)
        item_is_ref = get_origin(raw_item) is Annotated and any(
            getattr(m, "description", None) == IMAGE_REF_DESCRIPTION for m in get_args(raw_item)[1:]
        )
        single = _singular(name)
        sflag = "--" + (single if single not in taken else name).replace("_", "-")
        kw = {**kw, "action": "append"}
        if item is StyleRef:
            return FieldOption(name, (sflag,), {**kw, "type": parse_style_token, "metavar": "PATH[:WEIGHT][@MASK]",
                                                "help": _help(info, "repeat for several styles; @MASK: take the "
                                                                    "style only from the white part of this "
                                                                    "style-image mask")})
        if item is Region:
            return FieldOption(name, (sflag,), {**kw, "type": parse_region_token,
                                                "metavar": "STYLE[@STYLE_MASK]:MASK[:WEIGHT]",
                                                "help": _help(info, "repeat for each region (white in MASK = STYLE)")})
        if item is int:
            return FieldOption(name, (sflag,), {**kw, "type": _scalar_parser(int, False, "N"), "metavar": "N",
                                                "help": _help(info, "repeat for several")})
        if item is str:
            return FieldOption(name, (sflag,), {**kw, "metavar": "PATH" if item_is_ref else "TEXT",
                                                "help": _help(info, "repeat for several")})
    raise TypeError(f"spec field {name}: no CLI mapping for {info.annotation}")


def spec_options(model: type[BaseModel]) -> list[FieldOption]:
    """One ``FieldOption`` per field of ``model`` except the ``method`` discriminator."""
    names = set(model.model_fields)
    options = [field_option(n, info, names - {n}) for n, info in model.model_fields.items() if n != "method"]
    seen: dict[str, str] = {}
    for opt in options:
        for f in opt.flags:
            if f in seen:
                raise TypeError(f"{model.__name__}: fields {seen[f]} and {opt.field} both map to {f}")
            seen[f] = opt.field
    return options


def add_spec_arguments(parser: argparse.ArgumentParser, model: type[BaseModel]) -> list[FieldOption]:
    """Add the options of ``model`` to ``parser`` (in a group named after the model)."""
    options = spec_options(model)
    group = parser.add_argument_group(f"{model.__name__} fields")
    for opt in options:
        if opt.flags:
            group.add_argument(*opt.flags, **opt.kwargs)
        else:
            kwargs = {k: v for k, v in opt.kwargs.items()}
            group.add_argument(opt.field, **kwargs)
    return options


def spec_data(args: argparse.Namespace, options: list[FieldOption]) -> dict[str, Any]:
    """The fields given on the command line (unset ones are left to the model's defaults)."""
    data: dict[str, Any] = {}
    for opt in options:
        if hasattr(args, opt.field):
            value = getattr(args, opt.field)
            if value is argparse.SUPPRESS:
                continue
            if opt.field == "content" and value is None:
                continue
            data[opt.field] = value
    return data


def describe_errors(errors: list[dict[str, str]], options: list[FieldOption], method: str = "") -> list[str]:
    """pydantic error locations -> lines naming the command-line option."""
    by_field = {o.field: o.display for o in options}
    lines = []
    for e in errors:
        loc = e.get("loc", "").split(".") if e.get("loc") else []
        if loc and loc[0] == method:  # the discriminated union puts the method tag first
            loc = loc[1:]
        msg = e["msg"].removeprefix("Value error, ")
        if not loc:
            lines.append(msg)
            continue
        name = by_field.get(loc[0], loc[0])
        rest = loc[1:]
        if rest and rest[0].isdigit():
            name += f" #{int(rest[0]) + 1}"
            rest = rest[1:]
        where = name + (f" ({'.'.join(rest)})" if rest else "")
        lines.append(f"{where}: {msg}")
    return lines
