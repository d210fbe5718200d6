"""A training run's folder: its files (config.json, log.jsonl, eval.json, checkpoints/{last,best}), its place among
the runs (runs/train/exp, exp2, …), its lock, and how a start, an overwrite or a resume prepares it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segrefine.errors import SegrefineError, SettingError
from segrefine.hub import CONFIG_NAME, RUN_BEST_DIR, RUN_CHECKPOINTS, RUN_LAST_DIR, WEIGHTS_NAME
from segrefine.imageio import folder_problem, write_json, write_text

RUNS_ROOT = Path("runs/train")


@dataclass(frozen=True)
class RunFolder:
    """One run's folder and the files in it."""

    path: Path

    @classmethod
    def next(cls, root: Path = RUNS_ROOT) -> RunFolder:
        """runs/train/exp, exp2, exp3, … : the first free one."""
        taken = {int(m[1] or 1) for p in root.glob("exp*") if (m := re.fullmatch(r"exp(\d*)", p.name))}
        n = next(i for i in range(1, len(taken) + 2) if i not in taken)
        return cls(root / ("exp" if n == 1 else f"exp{n}"))

    @classmethod
    def latest(cls, root: Path = RUNS_ROOT) -> RunFolder | None:
        """The run under `root` whose config.json was written last, if any."""
        runs = [p for p in root.glob("exp*") if (p / CONFIG_NAME).is_file()]
        return cls(max(runs, key=lambda p: (p / CONFIG_NAME).stat().st_mtime)) if runs else None

    @classmethod
    def to_resume(cls, out: str | Path | None = None) -> RunFolder:
        """The run in `out` (default: the latest run), which must have its config.json."""
        run = cls(Path(out)) if out else cls.latest()
        if run is None or not run.config.is_file():
            raise SettingError(f"`resume`: no training run found in {out or RUNS_ROOT} (start one without `resume`)")
        return run

    @property
    def config(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def log(self) -> Path:
        return self.path / "log.jsonl"

    @property
    def eval(self) -> Path:
        return self.path / "eval.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / RUN_CHECKPOINTS

    @property
    def last(self) -> Path:
        return self.path / RUN_LAST_DIR

    @property
    def best(self) -> Path:
        return self.path / RUN_BEST_DIR

    def holds_run(self) -> bool:
        """Whether the folder holds a training run worth keeping: a checkpoint. A run stopped before its first
        checkpoint left only its config and log, with nothing to resume: that never blocks a new start."""
        checkpoints = self.checkpoints
        return checkpoints.is_dir() and any(p.is_dir() and not p.name.endswith(".tmp") for p in checkpoints.iterdir())

    def check_start(self, resume: bool = False, overwrite: bool = False) -> None:
        """Refuse a start in a folder that cannot be one (a checkpoint's: it would lose its config.json), or a new start
        in one that holds a run (without `overwrite`)."""
        if (self.path / WEIGHTS_NAME).exists():
            raise SettingError(
                f"`out` {self.path} is a checkpoint folder (it holds {WEIGHTS_NAME}), not a run folder: choose another "
                "`out` (to start from these weights, give them as `init_weights`)"
            )
        if not (resume or overwrite) and self.path.is_dir() and self.holds_run():
            raise SettingError(
                f"`out` {self.path} already holds a training run: continue it with `resume`, replace it with "
                f"`overwrite`, or choose another `out`"
            )
        if problem := folder_problem(self.path):
            raise SettingError(f"`out` {problem}")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an OS lock on the folder (created if missing): a second run on it is refused while this one lives.

        The OS releases the lock when the process ends however it ends (Ctrl-C, a crash, kill -9), so a dead run never
        leaves its folder locked. Windows has no flock: there runs are not guarded.
        """
        try:
            import fcntl
        except ImportError:
            yield
            return
        self._mkdir()
        try:
            lock = open(self.path / ".lock", "a+")
        except OSError as e:
            raise SettingError(f"cannot create `out` {self.path}: {e.strerror or e}") from None
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                holder = lock.read().strip()
                raise SettingError(
                    f"`out` {self.path} is in use by another training run{f' (process {holder})' if holder else ''}: "
                    "wait for it to end, or choose another `out`"
                ) from None
            lock.seek(0)
            lock.truncate()
            lock.write(str(os.getpid()))
            lock.flush()
            yield

    def prepare(self, resume_from: int | None = None, overwrite: bool = False) -> None:
        """Create the folder for a run starting at iteration `resume_from` (None: a new run). A resumed run's log loses
        the lines of the iterations it replays; a new run's old log goes, and with `overwrite` its checkpoints and
        scores too."""
        self._mkdir()
        if resume_from is not None:
            if self.log.is_file():
                lines = self.log.read_text().splitlines()
                kept = [line for line in lines if (it := _logged_iteration(line)) is not None and it <= resume_from]
                write_text(self.log, "".join(line + "\n" for line in kept))
            return
        self.log.unlink(missing_ok=True)
        if overwrite:
            shutil.rmtree(self.checkpoints, ignore_errors=True)
            self.eval.unlink(missing_ok=True)

    def append_log(self, record: dict[str, Any]) -> None:
        """Add one JSON line to log.jsonl."""
        try:
            with open(self.log, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise SegrefineError(f"cannot write {self.log}: {e.strerror or e}") from None

    def write_config(self, config: dict[str, Any]) -> None:
        write_json(self.config, config)

    def write_eval(self, summary: dict[str, Any]) -> None:
        write_json(self.eval, summary)

    def _mkdir(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SettingError(f"cannot create `out` {self.path}: {e.strerror or e}") from None


def _logged_iteration(line: str) -> int | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:  # the half-written last line of a killed run
        return None
    return record.get("iter") if isinstance(record, dict) else None
