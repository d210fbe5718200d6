"""The one exception type for user mistakes, and its variant that names settings."""

from __future__ import annotations

import re
from collections.abc import Callable

_SETTING = re.compile(r"`(\w+)`")


def flag(setting: str) -> str:
    """The command-line flag of a setting's Python name: `batch_size` -> `--batch-size`."""
    return "--" + setting.replace("_", "-")


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
