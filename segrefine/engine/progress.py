"""Progress bars and spinners (rich, on stderr, only on a terminal) for training, evaluation, prediction and export."""

from __future__ import annotations

import contextlib
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
)  # fmt: skip


def progress_bar(label: str, *extra: ProgressColumn, console: Console | None = None, enabled: bool = True) -> Progress:
    """LABEL, bar, done/total, elapsed, ETA, then `extra` columns; disabled off a terminal (stdout stays clean)."""
    console = console or Console(stderr=True)
    return Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
        TimeRemainingColumn(), *extra, console=console, disable=not (enabled and console.is_terminal),
    )  # fmt: skip


def status(message: str, enabled: bool = True) -> contextlib.AbstractContextManager:
    """A spinner with `message` on stderr while the block runs; nothing off a terminal."""
    console = Console(stderr=True)
    return console.status(message) if enabled and console.is_terminal else contextlib.nullcontext()


class TrainProgress:
    """Training progress: the bar with loss, lr and images/s on a terminal; plain log lines otherwise."""

    def __init__(self, total: int, start: int = 0, enabled: bool = True) -> None:
        self.console = Console(stderr=True)
        self.enabled = enabled
        self.live = enabled and self.console.is_terminal
        self.total = total
        self.progress = progress_bar(
            "[bold]train", TextColumn("{task.fields[stats]}"), console=self.console, enabled=enabled
        )
        self.task = self.progress.add_task("train", total=total, completed=start, stats="")

    def __enter__(self) -> TrainProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def update(self, step: int, record: dict[str, Any] | None) -> None:
        if not self.enabled:
            return
        if record is None:
            self.progress.update(self.task, completed=step)
            return
        stats = f"loss {record['loss']:.4f}  lr {record['lr']:.2e}  {record['images_per_s']:.1f} img/s"
        self.progress.update(self.task, completed=step, stats=stats)
        if not self.live:
            self.console.print(f"iter {step}/{self.total}  {stats}", highlight=False)

    def note(self, text: str) -> None:
        if self.enabled:  # one line whatever the terminal's width: notes carry paths
            self.console.print(text, highlight=False, markup=False, soft_wrap=True)
