"""eval and predict make their inference flags from InferenceOptions and hand the library one InferenceOptions."""

from dataclasses import replace

import pytest

from segrefine.engine.inference import InferenceOptions
from segrefine.errors import SegrefineError

SLIDE = ["--mode", "slide", "--crop", "512x1024", "--stride", "256x512", "--scales", "0.75,1,1.25", "--flip",
         "--batch-size", "2", "--precision", "bf16", "--backend", "torch"]  # fmt: skip
SLIDE_OPTIONS = InferenceOptions(
    mode="slide", crop=(512, 1024), stride=(256, 512), scales=(0.75, 1.0, 1.25), flip=True, batch_size=2,
    precision="bf16", backend="torch",
)  # fmt: skip


def _stop(seen):
    def record(*args, options, **kwargs):
        seen.append(options)
        raise SegrefineError("stopped")

    return record


@pytest.mark.parametrize(("args", "expected"), [([], InferenceOptions()), (SLIDE, SLIDE_OPTIONS)])
def test_eval_flags_become_one_inference_options(cli, monkeypatch, args, expected):
    import segrefine.engine.evaluate as evaluate

    seen = []
    monkeypatch.setattr(evaluate, "evaluate", _stop(seen))
    result = cli("eval", "--dataset", "toy", "--weights", "w", *args)
    assert result.returncode == 2 and "stopped" in result.stderr
    assert seen == [expected]


@pytest.mark.parametrize(("args", "expected"), [([], InferenceOptions()), (SLIDE, SLIDE_OPTIONS)])
def test_predict_flags_become_one_inference_options(cli, monkeypatch, tmp_path, args, expected):
    import segrefine.cli.predict as predict

    seen = []
    monkeypatch.setattr(predict, "load", _stop(seen))
    result = cli("predict", "--example", "--out", tmp_path, *args, "--compile")
    assert result.returncode == 2 and "stopped" in result.stderr
    assert seen == [replace(expected, compile=True)]


def test_eval_has_no_compile_flag(cli):
    result = cli("eval", "--dataset", "toy", "--weights", "w", "--compile")
    assert result.returncode == 2 and "--compile" in result.stderr
