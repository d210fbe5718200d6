"""The run folder's life (engine/run_folder.py) and the library `resume()`."""

import json
import os
from pathlib import Path

import pytest

import segrefine
from segrefine.engine import train as engine_train
from segrefine.engine.config import TrainConfig
from segrefine.engine.run_folder import RunFolder
from segrefine.errors import SegrefineError, SettingError

TINY = dict(dataset_options={"length": 4, "size": (64, 64)}, crop=(64, 64), batch_size=2, workers=0, device="cpu",
            eval_every=0, log_every=1)  # fmt: skip


def _run(path: Path, checkpoint: str | None = "last") -> RunFolder:
    """A run folder holding a config, a log and (unless None) one checkpoint."""
    run = RunFolder(path)
    run.path.mkdir(parents=True)
    run.write_config({"dataset": "toy"})
    run.log.write_text("".join(json.dumps({"iter": i}) + "\n" for i in (1, 2, 3)))
    if checkpoint:
        (run.checkpoints / checkpoint).mkdir(parents=True)
    return run


def test_next_takes_the_first_free_number(tmp_path):
    assert RunFolder.next(tmp_path).path == tmp_path / "exp"
    for name in ("exp", "exp3", "expert", "other"):
        (tmp_path / name).mkdir()
    assert RunFolder.next(tmp_path).path == tmp_path / "exp2"
    (tmp_path / "exp2").mkdir()
    assert RunFolder.next(tmp_path).path == tmp_path / "exp4"


def test_latest_is_the_run_whose_config_was_written_last(tmp_path):
    assert RunFolder.latest(tmp_path) is None
    (tmp_path / "exp3").mkdir()  # no config.json: not a run
    later, earlier = _run(tmp_path / "exp"), _run(tmp_path / "exp2")  # not by name
    os.utime(later.config, (1e9, 2e9))
    os.utime(earlier.config, (1e9, 1e9))
    assert RunFolder.latest(tmp_path) == later
    assert RunFolder.to_resume(earlier.path) == earlier
    with pytest.raises(SettingError, match=f"resume: no training run found in {tmp_path / 'exp3'}"):
        RunFolder.to_resume(tmp_path / "exp3")


def test_only_a_checkpoint_makes_a_folder_hold_a_run(tmp_path):
    assert not RunFolder(tmp_path / "missing").holds_run()
    assert not _run(tmp_path / "config-and-log", checkpoint=None).holds_run()
    assert not _run(tmp_path / "half-written", checkpoint="last.tmp").holds_run()
    assert _run(tmp_path / "saved", checkpoint="best").holds_run()


def test_check_start_refuses_a_held_run_unless_resume_or_overwrite(tmp_path):
    held = _run(tmp_path / "held")
    with pytest.raises(SettingError, match="already holds a training run: continue it with resume, replace it"):
        held.check_start()
    held.check_start(resume=True)
    held.check_start(overwrite=True)
    _run(tmp_path / "no-checkpoint", checkpoint=None).check_start()  # nothing to resume: never blocks
    (tmp_path / "file").write_text("")
    with pytest.raises(SettingError, match="out .*file is a file, not a folder"):
        RunFolder(tmp_path / "file").check_start(overwrite=True)
    checkpoint = held.last  # a checkpoint folder is never a run's: its config.json would be replaced
    (checkpoint / "model.safetensors").write_bytes(b"")
    for resume, overwrite in ((False, False), (True, False), (False, True)):
        with pytest.raises(SettingError, match="^out .*last is a checkpoint folder .*init_weights"):
            RunFolder(checkpoint).check_start(resume, overwrite)


def test_prepare_keeps_resumes_log_and_clears_what_a_new_start_replaces(tmp_path):
    resumed = _run(tmp_path / "resumed")
    resumed.log.write_text(resumed.log.read_text() + '{"iter": 4, "lo')  # a killed run's half line
    resumed.prepare(resume_from=2)
    assert [json.loads(line)["iter"] for line in resumed.log.read_text().splitlines()] == [1, 2]

    restarted = _run(tmp_path / "restarted")
    restarted.prepare()
    assert not restarted.log.exists() and restarted.last.is_dir()

    overwritten = _run(tmp_path / "overwritten")
    overwritten.write_eval({"mIoU": 0.5})
    overwritten.prepare(overwrite=True)
    assert not overwritten.log.exists() and not overwritten.checkpoints.exists() and not overwritten.eval.exists()
    assert overwritten.config.is_file()  # rewritten by the new run


def test_lock_refuses_a_second_holder_until_released(tmp_path):
    run = RunFolder(tmp_path / "new" / "run")
    with run.lock():
        assert (run.path / ".lock").read_text() == str(os.getpid())
        with pytest.raises(SettingError, match=f"out {run.path} is in use by another training run \\(process"):
            with run.lock():
                raise AssertionError("a second holder got the lock")
    with run.lock():  # released: the next run takes it
        assert (run.path / ".lock").read_text() == str(os.getpid())


def test_resume_continues_an_interrupted_run_from_its_folder(tmp_path, interrupt_training):
    out = tmp_path / "run"
    config = TrainConfig.from_recipe("toy", iters=4, save_every=2, out=str(out), **TINY)
    undo = interrupt_training(3)
    with pytest.raises(engine_train.TrainingInterrupted, match=f"continue with segrefine.resume\\('{out}'\\)"):
        segrefine.train(config)
    undo()

    with pytest.raises(SettingError, match="resume continues .* cannot change: lr, srm"):
        segrefine.resume(out, lr=0.5, srm="bilinear")
    with pytest.raises(SettingError, match="^unknown settings: lrate$"):
        segrefine.resume(out, lrate=0.5)
    with pytest.raises(SettingError, match="resume: no training run found"):
        segrefine.resume(tmp_path / "nothing")
    stored = TrainConfig.from_dict(json.loads(RunFolder(out).config.read_text())["train"])
    # the settings it has, given again (as tuples, a network switch flat): not a change
    assert segrefine.resume(out, workers=0, crop=stored.crop, srm=stored.model.srm, iters=4) == out
    run = RunFolder(out)
    assert json.loads((run.last / "trainer.json").read_text())["iteration"] == 4
    assert [json.loads(line)["iter"] for line in run.log.read_text().splitlines() if "loss" in line] == [1, 2, 3, 4]


def test_a_new_run_that_fails_before_its_first_checkpoint_leaves_no_folder(tmp_path, monkeypatch):
    loss, steps = engine_train.segmentation_loss, []

    def bad_label_at_step_two(*args, **kwargs):
        steps.append(1)
        if len(steps) == 2:
            raise SegrefineError("label file f002.png has values 7 that are neither a class nor 255")
        return loss(*args, **kwargs)

    monkeypatch.setattr(engine_train, "segmentation_loss", bad_label_at_step_two)
    for out, save_every in ((tmp_path / "new", 3), (tmp_path / "saved", 1)):
        with pytest.raises(SegrefineError, match="f002.png"):
            segrefine.train(TrainConfig.from_recipe("toy", iters=4, save_every=save_every, out=str(out), **TINY))
        steps.clear()
    assert not (tmp_path / "new").exists()  # nothing kept: it had nothing to resume
    assert RunFolder(tmp_path / "saved").holds_run()  # a checkpoint is kept, as after Ctrl-C


def test_a_resumed_run_writes_the_log_lines_of_an_uninterrupted_one(tmp_path, interrupt_training):
    settings = {**TINY, "iters": 6, "save_every": 2, "log_every": 3}
    segrefine.train(TrainConfig.from_recipe("toy", out=str(tmp_path / "straight"), **settings))
    undo = interrupt_training(3)  # the checkpoint holds iteration 2, in the middle of the first log window
    with pytest.raises(engine_train.TrainingInterrupted):
        segrefine.train(TrainConfig.from_recipe("toy", out=str(tmp_path / "resumed"), **settings))
    undo()
    segrefine.resume(tmp_path / "resumed")

    def losses(run: str) -> list[tuple[int, float]]:
        lines = map(json.loads, RunFolder(tmp_path / run).log.read_text().splitlines())
        return [(line["iter"], line["loss"]) for line in lines if "loss" in line]

    assert losses("resumed") == losses("straight") and [i for i, _ in losses("straight")] == [3, 6]
