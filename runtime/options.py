"""Settings declared once: dataclass fields that carry their help, parser and check.

A field made with :func:`option` gives, from that one declaration, its validation (``check_options`` in
the dataclass's ``__post_init__``), its command-line flag (``--name-with-dashes``) and its environment
variable (``COLBERT_ONNX_NAME``), as TEI's launcher does with clap. Precedence: flag, then variable,
then the field's default. A field made with :func:`nested` holds another such dataclass whose fields
are flattened into the same flags (EncoderConfig's ``session_options``). argparse and the standard
library only.
"""

from __future__ import annotations

import argparse
import dataclasses
import numbers
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidInputError

ENV_PREFIX = "COLBERT_ONNX_"
_NONE = ("none", "null", "")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Spec:
    """What a field knows about itself beyond its type and default."""

    help: str
    parse: Callable[[str], Any]  # text of a flag or environment variable -> value (ValueError if malformed)
    check: Callable[[str, Any], None] | None = None  # (field name, value): InvalidInputError if not allowed
    choices: tuple[str, ...] | None = None


def option(default: Any, help: str, parse: Callable[[str], Any], check: Callable[[str, Any], None] | None = None,
           choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field with a default, a help text, a parser for flag and variable text, and a check."""
    if choices is not None and check is None:
        check = one_of(choices)
    return dataclasses.field(default=default, metadata={"spec": Spec(help, parse, check, choices)})


def nested(factory: type) -> Any:
    """A field holding another options dataclass, built by `factory` by default; its fields get the flags."""
    return dataclasses.field(default_factory=factory, metadata={"nested": factory})


def check_options(instance: Any) -> None:
    """numpy's ints become the plain ints they stand for (dim=np.int64(64)), then every field's check runs; called
    by the options dataclass's ``__post_init__`` (the one place)."""
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        if isinstance(value, numbers.Integral) and not isinstance(value, (int, bool)):
            object.__setattr__(instance, f.name, int(value))
    for f in dataclasses.fields(instance):
        spec = f.metadata.get("spec")
        if spec is not None and spec.check is not None:
            spec.check(f.name, getattr(instance, f.name))


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _option_fields(cls: type) -> list[tuple[dataclasses.Field, Spec]]:
    found = []
    for f in dataclasses.fields(cls):
        if "nested" in f.metadata:
            found += _option_fields(f.metadata["nested"])
        elif "spec" in f.metadata:
            found.append((f, f.metadata["spec"]))
    return found


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type) -> None:
    """One flag per option field of `cls` (nested ones flattened); a flag not given sets nothing (so that
    ``--max-batch-tokens none`` is told apart from no flag)."""
    for f, spec in _option_fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        shown = "none" if default is None else str(default).lower() if isinstance(default, bool) else default
        text = f"{spec.help} (default {shown}; env {env_name(f.name)})"
        if spec.parse in (parse_bool, parse_optional_bool):
            parser.add_argument(flag_name(f.name), dest=f.name, default=argparse.SUPPRESS,
                                action=argparse.BooleanOptionalAction, help=text)
        else:
            parser.add_argument(flag_name(f.name), dest=f.name, default=argparse.SUPPRESS, type=spec.parse,
                                choices=spec.choices, metavar=None if spec.choices else f.name.split("_")[-1].upper(),
                                help=text)


def from_arguments(cls: type, args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Any:
    """An instance of `cls` from parsed flags, then environment variables, then the defaults.

    A malformed or refused environment value is an InvalidInputError naming the variable.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if "nested" in f.metadata:
            values[f.name] = from_arguments(f.metadata["nested"], args, environ)
            continue
        spec = f.metadata.get("spec")
        if spec is None:
            continue
        if hasattr(args, f.name):
            values[f.name] = getattr(args, f.name)
        elif environ.get(env_name(f.name)) is not None:
            values[f.name] = _from_environment(f.name, spec, environ[env_name(f.name)])
    return cls(**values)


def environment_settings(cls: type, args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> list[str]:
    """`VARIABLE='text'` for each option of `cls` that `args` took from the environment (no flag given)."""
    environ = os.environ if environ is None else environ
    return [f"{env_name(f.name)}={environ[env_name(f.name)]!r}" for f, _ in _option_fields(cls)
            if not hasattr(args, f.name) and environ.get(env_name(f.name)) is not None]


def _from_environment(name: str, spec: Spec, text: str) -> Any:
    variable = env_name(name)
    try:
        value = spec.parse(text)
    except ValueError as exc:
        raise InvalidInputError(f"{variable}={text!r} is not valid: {exc}") from None
    if spec.choices is not None and value not in spec.choices:
        raise InvalidInputError(f"{variable}={text!r} is not valid: choose one of {', '.join(spec.choices)}")
    if spec.check is not None:
        try:
            spec.check(name, value)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{variable}={text!r} is not valid: {exc}") from None
    return value


# --- parsers: the text of a flag or an environment variable -> a value ---------------------------------


def parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError("expected an int") from None


parse_int.__name__ = "int"  # argparse names the type in its error: "invalid int value"


def parse_optional_int(text: str) -> int | None:
    return None if text.strip().lower() in _NONE else parse_int(text)


parse_optional_int.__name__ = "int or none"


def parse_str(text: str) -> str:
    return text.strip()


parse_str.__name__ = "str"


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE + _FALSE:
        return lowered in _TRUE
    raise ValueError(f"expected one of {', '.join(_TRUE + _FALSE)}")  # never "or auto": it has no auto


def parse_optional_bool(text: str) -> bool | None:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    if lowered in _NONE + ("auto",):
        return None
    raise ValueError(f"expected one of {', '.join(_TRUE + _FALSE)} or auto")


# --- checks: (field name, value) -> None, or InvalidInputError naming the field ---------------------------


def positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be a positive int, got {value!r}")


def optional_positive_int(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InvalidInputError(f"{name} must be a positive int or None, got {value!r}")


MAX_THREADS = 1024  # more than any CPU this runs on has; each onnxruntime thread is a native thread with its stack


def optional_thread_count(name: str, value: Any) -> None:
    """A positive thread count up to MAX_THREADS, or None: 10**6 threads would exhaust the machine's memory."""
    optional_positive_int(name, value)
    if value is not None and value > MAX_THREADS:
        raise InvalidInputError(f"{name}={value} is more threads than any CPU runs at once; at most {MAX_THREADS}")


def boolean(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise InvalidInputError(f"{name} must be True or False, got {value!r}")


def optional_boolean(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, bool):
        raise InvalidInputError(f"{name} must be True, False or None, got {value!r}")


def one_of(choices: tuple[str, ...]) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if not isinstance(value, str) or value not in choices:
            raise InvalidInputError(f"{name} must be one of {', '.join(choices)}, got {value!r}")

    return check
