"""The one exception type for user mistakes, and its variant that names settings."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from typing import Any

_SETTING = re.compile(r"`(\w+)`")


# Settings whose flag is not their name with dashes: a repeatable flag, given once per item; serve's body limit.
_FLAGS = {"dataset_options": "--dataset-option", "max_body_mb": "--max-body"}


def flag(setting: str) -> str:
    """The command-line flag of a setting's Python name: `batch_size` -> `--batch-size`."""
    return _FLAGS.get(setting, "--" + setting.replace("_", "-"))


def worded(text: str, word: Callable[[str], str] = flag) -> str:
    """`text` with each backquoted setting name replaced by `word(name)` (by default its flag)."""
    return _SETTING.sub(lambda m: word(m[1]), text)


class SegrefineError(Exception):
    """A user mistake (bad option, bad file): the CLI prints it as one line on stderr and exits with code 2."""


class Interrupted(SegrefineError):
    """Ctrl-C, with what the interrupted command has to say (where training's last checkpoint is): exit code 130."""

    exit_code = 130


class SettingError(SegrefineError):
    """A mistake in the value of one or more settings, each written as its Python name in backquotes (`lr`).

    str() shows the bare names (what a Python caller passed); the CLI shows its flag (`--lr`) or the config file
    that set the value instead, through `worded`.
    """

    def __str__(self) -> str:
        return str(self.worded(lambda name: name))

    @property
    def settings(self) -> list[str]:
        return _SETTING.findall(str(self.args[0]))

    def worded(self, word: Callable[[str], str]) -> SegrefineError:
        """The same message with each setting's name replaced by `word(name)`."""
        return SegrefineError(worded(str(self.args[0]), word))


_KINDS = {"int": "an integer", "float": "a finite number", "str": "a string", "bool": "true or false"}


def check_fields(settings: Any) -> None:
    """Check every field of a settings dataclass against its annotation ("int", "str | None", "tuple[int, int]",
    "dict[...]", or another settings dataclass); numbers must be finite. A mismatch is a SettingError naming it."""
    for f in fields(settings):
        _check_type(f.name, getattr(settings, f.name), str(f.type))


def _check_type(name: str, value: Any, annotation: str) -> None:
    options = [a.strip() for a in annotation.split("|")]
    if value is None and "None" in options:
        return
    kind = options[0]
    if kind.startswith("tuple["):
        items = [i.strip() for i in kind[len("tuple["):-1].split(",")]
        plural = "integers" if items[0] == "int" else "finite numbers"
        if items[-1] == "...":  # tuple[X, ...]: one or more of one kind
            ok = isinstance(value, tuple) and len(value) > 0 and all(_fits(v, items[0]) for v in value)
            what = f"one or more {plural}"
        else:
            ok = isinstance(value, tuple) and len(value) == len(items) and all(_fits(v, i) for v, i in zip(value, items))
            what = f"{len(items)} {plural}"
    elif kind.startswith("dict["):
        ok, what = isinstance(value, dict), "a table of KEY = VALUE options"
    elif kind in _KINDS:
        ok, what = _fits(value, kind), _KINDS[kind]
    else:  # a nested settings dataclass, named by its class
        ok, what = is_dataclass(value) and type(value).__name__ == kind, f"a {kind}"
    if not ok:
        shown = list(value) if isinstance(value, tuple) else value
        raise SettingError(f"`{name}` must be {what}{' or none' if 'None' in options else ''}, got {shown!r}")


def _fits(value: Any, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, str)


def one_line(message: object) -> str:
    """A message (or an exception's) on one line: every run of whitespace, newlines included, as one space."""
    return " ".join(str(message).split())
