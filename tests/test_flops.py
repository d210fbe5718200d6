import json

import pytest
import torch
import torchvision

from segrefine.hub.flops import count_flops, count_module_flops
from segrefine.models import ModelConfig


@pytest.mark.parametrize("name,gmacs", [("resnet18", 1.82), ("resnet50", 4.11), ("resnet101", 7.83)])
def test_resnet_classifier_anchors(name, gmacs):
    with torch.device("meta"):
        model = getattr(torchvision.models, name)()
        total, _ = count_module_flops(model, torch.empty(1, 3, 224, 224))
    assert total / 2e9 == pytest.approx(gmacs, rel=0.01)


def test_lite_fits_the_paper_budget_and_modules_add_up():
    report = count_flops(ModelConfig(variant="lite"), (1024, 2048))
    assert report.gmacs <= 137.9
    assert report.gflops == pytest.approx(2 * report.gmacs)
    assert sum(report.modules.values()) == pytest.approx(report.gmacs, rel=1e-6)
    assert {"backbone", "crm", "srm.c2", "srm.c3", "srm.c4", "fusion", "classifier"} <= set(report.modules)
    assert "aux_head" not in report.modules


def test_memory_block_is_counted_and_its_own_module():
    without = count_flops(ModelConfig(variant="lite"), (256, 512))
    with_memory = count_flops(ModelConfig(variant="lite", memory=True), (256, 512))
    assert with_memory.modules["memory"] > 0
    assert with_memory.gmacs == pytest.approx(without.gmacs + with_memory.modules["memory"], rel=1e-6)


def test_switches_change_the_count():
    full = count_flops(ModelConfig(), (256, 512)).gmacs
    assert count_flops(ModelConfig(srm="bilinear"), (256, 512)).gmacs < full
    assert count_flops(ModelConfig(crm="off"), (256, 512)).gmacs < full



def test_flops_json_through_the_entry_point(cli):
    result = cli("flops", "--json", "--variant", "large", "--size", "512x1024", "--num-classes", "150", "--memory")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["variant"] == "large" and report["input"] == [512, 1024]
    assert report["gflops"] == pytest.approx(2 * report["gmacs"])
    assert report["params"] > 40e6 and report["modules"]["memory"] > 0
    assert "grid_sample (SRM warping)" in report["uncounted"]


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--size", "1024"], "--size"),
        (["--size", "0x5"], "--size"),
        (["--size", "axb"], "--size"),
        (["--size", "-3x4"], "--size"),
        (["--size", "10000000x10000000"], "--size 10000000x10000000 must have sides of 1 to 65536 pixels"),
        (["--variant", "huge"], "'lite', 'base', 'large'"),
        (["--srm", "wide"], "'bilinear', 'flow', 'full'"),
        (["--crm", "x"], "--crm"),
    ],
)
def test_bad_flops_input_is_one_line_and_exit_2(cli, args, needle):
    result = cli("flops", *args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.stderr


def test_version_and_help_list_only_working_subcommands(cli):
    assert cli("--version").stdout.strip().startswith("segrefine ")
    assert "flops" in cli("--help").stdout
