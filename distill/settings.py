"""Typed settings: what every `[table]` of a run config is checked against before any work.

Each settings dataclass declares its fields with a type and a default (the one place a
setting is documented) and its ranges in `__post_init__` through `check_ranges`. `build`
checks the types first, from the annotations, so a wrong value ends in one line that names
the setting: `train.steps: expected a whole number, got 1.5`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing


class SettingError(ValueError):
    """A setting's value is wrong: `<setting>: <why>`."""

    def __init__(self, setting: str, why: str):
        self.setting, self.why = setting, why
        # A name from the command line is shown as typed only when it is a plain dotted name.
        shown = setting if re.fullmatch(r"[\w.+-]*", setting) else repr(setting)
        super().__init__(f"{shown}: {why}" if shown else why)

    def under(self, where: str) -> SettingError:
        return SettingError(".".join(p for p in (where, self.setting) if p), self.why)


def show(value) -> str:
    """A value as an error message quotes it: its repr, clipped to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def type_problem(kind, value) -> str | None:
    """Why `value` is not of the declared `kind` (None when it is). Booleans are only true
    or false: 1, "true" and "False" are not booleans; a number is finite."""
    if kind is bool:
        return None if isinstance(value, bool) else f"expected true or false, got {show(value)}"
    if kind is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else (
            f"expected a whole number, got {show(value)}")
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"expected a number, got {show(value)}"
        return None if math.isfinite(value) else f"expected a finite number, got {show(value)}"
    if kind is str:
        return None if isinstance(value, str) else f"expected a string, got {show(value)}"
    if kind is dict or typing.get_origin(kind) is dict:
        return None if isinstance(value, dict) else f"expected a table, got {show(value)}"
    if kind is list or typing.get_origin(kind) is list:
        return None if isinstance(value, list) else f"expected a list, got {show(value)}"
    return None  # nested settings and models: checked where they are built


def check_types(cls, values: dict) -> None:
    """Refuse unknown settings and values of the wrong type for dataclass `cls`."""
    if not isinstance(values, dict):
        raise SettingError("", f"expected a table of settings, got {show(values)}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known, key=str)
    if unknown:
        raise SettingError(str(unknown[0]), f"unknown setting (known: {', '.join(sorted(known))})")
    for name, value in values.items():
        if (why := type_problem(hints[name], value)) is not None:
            raise SettingError(name, why)


def check_ranges(obj, rules: dict[str, tuple[bool, str]]) -> None:
    """Raise SettingError for the first rule that does not hold: {setting: (holds, must)}."""
    for name, (holds, must) in rules.items():
        if not holds:
            raise SettingError(name, f"{show(getattr(obj, name))} {must}")


def build(cls, values: dict, where: str):
    """An instance of settings dataclass `cls` from a config table, or SettingError naming
    `<where>.<setting>`."""
    try:
        check_types(cls, values)
        return cls(**values)
    except SettingError as e:
        raise e.under(where).with_traceback(None) from None
