import pytest

from segrefine.cli.options import parse_scales, parse_size
from segrefine.errors import SegrefineError


def test_parse_size():
    assert parse_size("512x1024", "--crop") == (512, 1024)
    assert parse_size(" 769X769 ", "--crop") == (769, 769)
    for bad in ("512", "512x", "0x5", "1x2x3", "axb", "-3x4", ""):
        with pytest.raises(SegrefineError, match="--stride"):
            parse_size(bad, "--stride")


def test_parse_scales():
    assert parse_scales("0.5,0.75, 1.0") == (0.5, 0.75, 1.0)
    for bad in ("0.5,big", "0.5,0", "-1", "", "nan", "inf", "1,,2"):
        with pytest.raises(SegrefineError, match="--scales"):
            parse_scales(bad)


def test_parse_key_values():
    from segrefine.cli.options import parse_key_values

    assert parse_key_values(["length=8", "size=64x128", "seed=-1", "scale=0.5", "flag=true", "name=a=b"], "-O") == {
        "length": 8, "size": (64, 128), "seed": -1, "scale": 0.5, "flag": True, "name": "a=b",
    }
    assert parse_key_values(None, "-O") == {}
    for bad in ("length", "=3"):
        with pytest.raises(SegrefineError, match="--dataset-option"):
            parse_key_values([bad], "--dataset-option")


def test_settings_are_worded_as_their_flags():
    from segrefine.errors import SettingError, flag

    assert flag("batch_size") == "--batch-size"
    error = SettingError("`data_root` and `dataset_options` are for a calibration dataset")
    assert str(error.worded(flag)) == "--data-root and --dataset-option are for a calibration dataset"
