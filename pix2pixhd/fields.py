"""Config fields that carry their allowed values, and the check of a value against them.

    ngf: int = bounded(64, at_least=1)
    norm: str = choice("instance", NORMS)
    name: str = folder_name("pix2pixhd_nuclei")

`config.validate` checks every field with `check_value`: its type (numbers where floats are
expected, comma-separated text where lists are), then its choices, bounds or name rules.
"""

from __future__ import annotations

import math
from dataclasses import Field, field
from typing import Any, get_args, get_origin

from pix2pixhd.config_files import ConfigError, parse_yaml, shown
from pix2pixhd.layout import DataError, plain_name

MAX_NAME_BYTES = 255
"""Longest file or folder name most file systems allow."""


def choice(default: str, allowed: tuple[str, ...]) -> Any:
    """A field that takes one of `allowed`; `validate` refuses anything else."""
    return field(default=default, metadata={"choices": allowed})


def bounded(default: Any, **bounds: float) -> Any:
    """A number, or a list of numbers, within `bounds`: at_least, above, below, at_most.

    A list default is given as a list and copied for every instance."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=bounds)
    return field(default=default, metadata=bounds)


def folder_name(default: str | list[str]) -> Any:
    """Text (or a list of texts) that becomes a folder name, so must each be one plain path
    component of at most MAX_NAME_BYTES."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"folder_name": True})
    return field(default=default, metadata={"folder_name": True})


def check_counts(*, allow_zero: bool = False, **counts: int) -> None:
    """ValueError naming the first of `counts` that is not an integer >= 1 (>= 0 if allow_zero).

    For sizes and counts passed as arguments (ngf, num_D, samples per batch, ...): a bool or a
    float is refused, though Python would let both through as numbers.
    """
    low = 0 if allow_zero else 1
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}={value!r} must be an integer >= {low}")


def check_value(value: Any, option: Field, expected: Any, name: str) -> Any:
    """`value` as the field's type, within its choices or bounds, a plain folder name where
    the field is one; ConfigError otherwise."""
    value = _coerce(value, expected, name)
    allowed = option.metadata.get("choices")
    if allowed is not None and value not in allowed:
        raise ConfigError(f"{name}={shown(value)} is not one of {', '.join(allowed)}")
    for number in value if isinstance(value, list) else [value]:
        if isinstance(number, int | float):
            _check_bounds(number, option.metadata, name if number is value else f"{name} entry")
    if option.metadata.get("folder_name"):
        for text in value if isinstance(value, list) else [value]:
            if len(text.encode()) > MAX_NAME_BYTES:
                raise ConfigError(f"{name}={shown(text)} is {len(text.encode())} bytes long; "
                                  f"a folder name has at most {MAX_NAME_BYTES}")
            try:
                plain_name(text, name)
            except DataError as error:
                raise ConfigError(str(error)) from error
    return value


_BOUNDS = {
    "at_least": (lambda value, bound: value >= bound, "at least"),
    "above": (lambda value, bound: value > bound, "above"),
    "below": (lambda value, bound: value < bound, "below"),
    "at_most": (lambda value, bound: value <= bound, "at most"),
}


def _check_bounds(number: float, bounds: dict[str, Any], name: str) -> None:
    if isinstance(number, float) and not math.isfinite(number):
        raise ConfigError(f"{name}={number} must be a finite number")
    wanted = [(key, bound) for key, bound in bounds.items() if key in _BOUNDS]
    if not all(_BOUNDS[key][0](number, bound) for key, bound in wanted):
        allowed = " and ".join(f"{_BOUNDS[key][1]} {bound}" for key, bound in wanted)
        raise ConfigError(f"{name}={shown(number)} must be {allowed}")


def _coerce(value: Any, expected: Any, name: str) -> Any:
    """Check a value against the field's type; numbers are accepted where floats are expected."""
    if expected is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return float(value)  # YAML reads 1e-4 (no dot) as a string
        except (ValueError, OverflowError):
            pass
    if get_origin(expected) is list:
        (item_type,) = get_args(expected)
        if isinstance(value, str):  # "nuclei,membrane" or "32,64,128,256"
            value = [parse_yaml(v.strip(), f"the value of {name}") if item_type is int
                     else v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, (list, tuple)) and all(
            isinstance(v, item_type) and not isinstance(v, bool) for v in value
        ):
            return list(value)
    elif isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return value
    raise ConfigError(
        f"{name} expects {getattr(expected, '__name__', expected)}, got {shown(value)}")
