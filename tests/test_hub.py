"""Checkpoints, weights references, the registry, model cards and Hub round trips against a loopback Hub."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from huggingface_hub import constants
from safetensors.torch import load_file
from torch import nn

import segrefine.hub.checkpoint as checkpoint
import segrefine.hub.model as hub_model
import segrefine.hub.reference as reference
import segrefine.hub.upload as upload
from segrefine.errors import SegrefineError
from segrefine.hub import (
    RUN_BEST_DIR,
    RUN_LAST_DIR,
    default_weights,
    fetch_backbone,
    load_model,
    load_registry,
    load_state,
    load_state_dict_strict,
    model_card,
    pull,
    upload_checkpoint,
    resolve,
    save_checkpoint,
)
from segrefine.hub.registry import BackboneEntry, Registry, validate_registry
from hub_server import HubServer

CLASSES = ("road", "car", "sky")
PALETTE = ((128, 64, 128), (0, 0, 142), (70, 130, 180))


@dataclass(frozen=True)
class TinyConfig:
    num_classes: int = 3
    width: int = 4
    tied: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


class Tiny(nn.Module):
    """A stand-in network with a config, parameters, BN buffers and a memory buffer."""

    def __init__(self, config: TinyConfig = TinyConfig()) -> None:
        super().__init__()
        self.config = config
        self.stem = nn.Conv2d(3, config.width, 1)
        self.bn = nn.BatchNorm2d(config.width)
        self.head = nn.Conv2d(config.width, config.num_classes, 1)
        if config.tied:
            self.head_copy = self.head  # one tensor under two names
        self.register_buffer("memory", torch.randn(config.num_classes, config.width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(self.stem(x)))


def tiny_rebuild(config: dict) -> nn.Module:
    return Tiny(TinyConfig(**config["model"]))


def save_tiny(folder: Path, model: nn.Module | None = None, **kwargs) -> nn.Module:
    model = model or Tiny()
    save_checkpoint(model, folder, dataset="toy", classes=CLASSES, palette=PALETTE, **kwargs)
    return model


def same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def tiny_models(monkeypatch):
    """Checkpoints rebuild as Tiny, and pushes count its parameters instead of running the FLOP counter."""
    monkeypatch.setattr(hub_model, "rebuild", tiny_rebuild)
    monkeypatch.setattr(upload, "_complexity", lambda config, size: SimpleNamespace(params=123_456, gmacs=1.5))


def _point_at(monkeypatch, url: str) -> None:
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")


@pytest.fixture
def hub(hf, monkeypatch):
    """A loopback Hub that takes any token; HF_TOKEN holds one, as pushing needs."""
    monkeypatch.setenv("HF_TOKEN", "hf_any")
    with HubServer() as server:
        _point_at(monkeypatch, server.url)
        yield server


# -- checkpoints -------------------------------------------------------------------------------------------------


def test_save_pretrained_writes_config_and_safetensors(tmp_path):
    model = save_tiny(tmp_path / "ckpt", metrics={"mIoU": 0.5, "boundary_mIoU": float("nan")}, flip_pairs=[(0, 1)],
                      extra={"train": {"epochs": 2}})
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["model"] == model.config.to_dict()
    assert config["dataset"] == "toy" and config["classes"] == list(CLASSES)
    assert config["palette"] == [list(c) for c in PALETTE] and config["flip_pairs"] == [[0, 1]]
    assert config["metrics"] == {"mIoU": 0.5, "boundary_mIoU": None} and config["train"] == {"epochs": 2}
    assert config["segrefine_version"]
    state = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    assert state.keys() == model.state_dict().keys()
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]


def test_save_pretrained_rejects_wrong_class_count_and_reserved_extra(tmp_path):
    with pytest.raises(SegrefineError, match="3-class model with 2 class names"):
        save_checkpoint(Tiny(), tmp_path, dataset="toy", classes=CLASSES[:2], palette=PALETTE[:2])
    with pytest.raises(ValueError, match="classes"):
        save_tiny(tmp_path, extra={"classes": []})


def test_save_is_atomic(tmp_path, monkeypatch):
    folder = tmp_path / "ckpt"
    save_tiny(folder)
    before = (folder / "model.safetensors").read_bytes()

    def crash(model, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(checkpoint, "save_model", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        save_tiny(folder, Tiny(TinyConfig(width=8)))
    assert (folder / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]


def test_tied_tensors_are_saved_once_and_restored(tmp_path, monkeypatch):
    monkeypatch.setattr(hub_model, "rebuild", tiny_rebuild)
    model = save_tiny(tmp_path, Tiny(TinyConfig(tied=True)))
    assert not any(k.startswith("head_copy.") for k in load_file(str(tmp_path / "model.safetensors")))
    loaded, _ = load_model(tmp_path)
    assert loaded.head_copy is loaded.head and same_state(loaded, model)


def test_noncontiguous_tensors_are_saved(tmp_path):
    model = Tiny()
    with torch.no_grad():
        model.memory = model.memory.t().contiguous().t()  # non-contiguous buffer
    save_tiny(tmp_path, model)
    assert torch.equal(load_state(tmp_path / "model.safetensors")["memory"], model.memory)


def test_load_model_restores_weights_in_eval_mode(tmp_path, tiny_models):
    model = save_tiny(tmp_path / "ckpt")
    loaded, config = load_model(tmp_path / "ckpt")
    assert not loaded.training and same_state(loaded, model) and config["dataset"] == "toy"


def test_load_model_with_the_real_network(tmp_path):
    from segrefine import build_model

    model = build_model(variant="lite", num_classes=3, aux=False).eval()
    save_tiny(tmp_path, model)
    loaded, config = load_model(tmp_path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert config["model"]["variant"] == "lite"


@pytest.mark.parametrize("legacy", [False, True])
def test_pickled_checkpoints_are_refused(tmp_path, monkeypatch, legacy):
    path = tmp_path / "model.safetensors"
    torch.save(Tiny().state_dict(), path, _use_new_zipfile_serialization=not legacy)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load must never be called"))
    with pytest.raises(SegrefineError, match="pickled PyTorch checkpoint"):
        load_state(path)
    (tmp_path / "config.json").write_text(json.dumps({"model": {}}))
    with pytest.raises(SegrefineError, match="pickled PyTorch checkpoint"):
        resolve(path)
    with pytest.raises(SegrefineError, match="pickled PyTorch checkpoint"):
        resolve(tmp_path)


def test_safetensors_whose_header_length_looks_like_pickle_are_read(tmp_path):
    from safetensors.torch import save

    state = {"w": torch.ones(2)}
    blob = next(b for k in range(256) if (b := save(state, metadata={"pad": "x" * k}))[0] == 0x80)
    (tmp_path / "w.safetensors").write_bytes(blob)
    assert torch.equal(load_state(tmp_path / "w.safetensors")["w"], state["w"])


def test_non_safetensors_files_are_refused(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"hello, this is not a tensor file")
    with pytest.raises(SegrefineError, match="not a safetensors file"):
        load_state(tmp_path / "junk.safetensors")
    with pytest.raises(SegrefineError, match="weights file not found"):
        load_state(tmp_path / "missing.safetensors")


def test_truncated_safetensors_are_refused_in_one_line(tmp_path):
    save_tiny(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4])
    for load in (load_state, lambda path: load_model(path.parent)):
        with pytest.raises(SegrefineError, match=r"model.safetensors is not a safetensors file \(.+\)$") as info:
            load(weights)
        assert "\n" not in str(info.value)


def test_weights_file_of_the_wrong_shape_names_both_shapes(tmp_path, tiny_models):
    save_tiny(tmp_path, Tiny(TinyConfig(width=6)))
    with pytest.raises(SegrefineError, match=r"shape mismatches \(.*stem.weight 6×3×1×1 vs 4×3×1×1"):
        checkpoint.load_weights_file(Tiny(), tmp_path / "model.safetensors", "ckpt")


def test_strict_load_names_missing_unexpected_and_mismatched_keys():
    state = Tiny().state_dict()
    state.pop("head.weight")
    state["extra.weight"] = torch.zeros(1)
    state["stem.bias"] = torch.zeros(99)
    with pytest.raises(SegrefineError) as info:
        load_state_dict_strict(Tiny(), state, "ckpt.safetensors")
    message = str(info.value)
    assert "ckpt.safetensors" in message and "\n" not in message
    assert "1 missing keys (head.weight)" in message
    assert "1 unexpected keys (extra.weight)" in message
    assert "1 shape mismatches (stem.bias 99 vs 4)" in message


def test_strict_load_lists_the_first_keys_and_the_count():
    # 9, not 10: torch fills in a missing bn.num_batches_tracked itself, so it is not missing.
    with pytest.raises(SegrefineError, match=r"9 missing keys \(memory, stem.weight, .* … \(9 in all\)\)"):
        load_state_dict_strict(Tiny(), {}, "empty")


# -- references --------------------------------------------------------------------------------------------------


def test_reference_forms(tmp_path):
    folder = tmp_path / "ckpt"
    save_tiny(folder)
    by_file = resolve(folder / "model.safetensors")
    by_folder = resolve(folder)
    assert by_file.weights_path == by_folder.weights_path == folder / "model.safetensors"
    assert by_file.config_path == by_folder.config_path == folder / "config.json"

    run = tmp_path / "run"
    save_tiny(run / RUN_LAST_DIR)
    assert resolve(run).weights_path == run / RUN_LAST_DIR / "model.safetensors"
    save_tiny(run / RUN_BEST_DIR)
    assert resolve(str(run)).weights_path == run / RUN_BEST_DIR / "model.safetensors"


def test_reference_errors(tmp_path):
    lone = tmp_path / "lone"
    save_tiny(lone)
    (lone / "config.json").unlink()
    with pytest.raises(SegrefineError, match="has no config.json beside it"):
        resolve(lone / "model.safetensors")
    with pytest.raises(SegrefineError, match="neither a checkpoint folder"):
        resolve(lone)
    with pytest.raises(SegrefineError, match="no file or folder"):
        resolve(tmp_path / "nope" / "model.safetensors")
    with pytest.raises(SegrefineError, match=r"unknown weights reference 'mystery'.*segrefine weights pull"):
        resolve("mystery")
    (lone / "config.json").write_text('{"architecture": "resnet18"}')
    with pytest.raises(SegrefineError, match="not a segrefine config.json"):
        resolve(lone)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("alice/tiny", ("alice/tiny", None)),
        ("alice/tiny@v1.0", ("alice/tiny", "v1.0")),
        ("timm/resnet18.a1_in1k@main", ("timm/resnet18.a1_in1k", "main")),
        ("tiny", None),  # a bare name is a registry name, never a Hub repo
        ("alice/tiny/extra", None),
        ("alice/tiny@", None),
        ("alice/tiny@a b", None),
        ("alice/tiny@a@b", None),
        ("alice--x/tiny", None),
        ("-alice/tiny", None),
        ("alice/tiny.git", None),
    ],
)
def test_hub_ids(text, parsed):
    assert reference.split_hub_id(text) == parsed


# -- the Hub -----------------------------------------------------------------------------------------------------


def test_push_then_pull_round_trip(tmp_path, hub, tiny_models):
    model = save_tiny(tmp_path / "run" / RUN_BEST_DIR, metrics={"mIoU": 0.5, "split": "val"})
    url = upload_checkpoint(tmp_path / "run", "alice/tiny")
    assert url.startswith(f"{hub.url}/alice/tiny/commit/")
    uploaded = hub.files("alice/tiny")
    assert uploaded["model.safetensors"] == (tmp_path / "run" / RUN_BEST_DIR / "model.safetensors").read_bytes()
    assert uploaded["config.json"] == (tmp_path / "run" / RUN_BEST_DIR / "config.json").read_bytes()
    assert "library_name: segrefine" in uploaded["README.md"].decode()

    weights = resolve("alice/tiny")
    assert Path(constants.HF_HUB_CACHE) in weights.weights_path.parents
    assert weights.weights_path.read_bytes() == uploaded["model.safetensors"]
    loaded, config = load_model("alice/tiny")
    assert same_state(loaded, model) and config["metrics"]["mIoU"] == 0.5


def test_revisions(tmp_path, hub, tiny_models):
    save_tiny(tmp_path / "a")
    save_tiny(tmp_path / "b", Tiny(TinyConfig(width=6)))
    upload_checkpoint(tmp_path / "a", "alice/tiny")
    upload_checkpoint(tmp_path / "b", "alice/tiny", revision="dev")
    assert load_model("alice/tiny")[1]["model"]["width"] == 4
    assert load_model("alice/tiny@dev")[1]["model"]["width"] == 6
    commit = hub.repos["alice/tiny"].branches["dev"]
    assert resolve(f"alice/tiny@{commit}").weights_path.parent.name == commit
    with pytest.raises(SegrefineError, match="revision 'nope' not found in Hub repo alice/tiny"):
        resolve("alice/tiny@nope")


def test_missing_repo_and_non_checkpoint_repo(hub):
    with pytest.raises(SegrefineError, match="Hub repo bob/absent not found"):
        resolve("bob/absent")
    hub.add_repo("bob/other", {"weights.bin": b"x"})
    with pytest.raises(SegrefineError, match="has no config.json: it is not a segrefine checkpoint"):
        resolve("bob/other")


def test_offline_uses_the_prefilled_cache(tmp_path, hub, tiny_models, monkeypatch):
    save_tiny(tmp_path / "ckpt")
    upload_checkpoint(tmp_path / "ckpt", "alice/tiny")
    online = resolve("alice/tiny")
    seen = len(hub.requests)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert resolve("alice/tiny") == online
    assert pull("alice/tiny") == online.weights_path.parent
    assert len(hub.requests) == seen
    with pytest.raises(SegrefineError, match=r"not in the Hugging Face cache .* HF_HUB_OFFLINE=1 .* `segrefine weights pull alice/other`"):
        resolve("alice/other")
    with pytest.raises(SegrefineError, match="cannot push while HF_HUB_OFFLINE=1"):
        upload_checkpoint(tmp_path / "ckpt", "alice/tiny")


def test_unreachable_hub(hf, monkeypatch):
    import huggingface_hub.utils._http as hf_http

    with HubServer() as server:
        url = server.url
    _point_at(monkeypatch, url)
    monkeypatch.setattr(hf_http.time, "sleep", lambda seconds: None)  # skip the library's retry back-off
    with pytest.raises(SegrefineError, match="cannot reach the Hub at .* not in the cache"):
        resolve("alice/tiny")


def test_tokens_and_private_repos(tmp_path, hf, tiny_models, monkeypatch):
    save_tiny(tmp_path / "ckpt")
    with HubServer(token="hf_secret") as server:
        _point_at(monkeypatch, server.url)
        with pytest.raises(SegrefineError, match="pushing to the Hub needs a Hugging Face token .*pass token"):
            upload_checkpoint(tmp_path / "ckpt", "alice/private", private=True)
        assert not server.requests
        with pytest.raises(SegrefineError, match="refused access to alice/private .*with token or set HF_TOKEN"):
            upload_checkpoint(tmp_path / "ckpt", "alice/private", private=True, token="hf_wrong")
        upload_checkpoint(tmp_path / "ckpt", "alice/private", private=True, token="hf_secret")
        assert server.repos["alice/private"].private
        with pytest.raises(SegrefineError, match="Hub repo alice/private not found .*token"):
            resolve("alice/private")
        assert resolve("alice/private", token="hf_secret").weights_path.is_file()
        monkeypatch.setenv("HF_TOKEN", "hf_secret")
        assert resolve("alice/private", cache_dir=tmp_path / "other-cache").weights_path.is_file()


def test_push_refuses_bad_input(tmp_path, hub, tiny_models):
    with pytest.raises(SegrefineError, match="owner/name"):
        upload_checkpoint(tmp_path, "no-owner")
    with pytest.raises(SegrefineError, match="no file or folder"):
        upload_checkpoint(tmp_path / "missing", "alice/x")
    save_tiny(tmp_path / "ckpt", Tiny(TinyConfig(width=6)))
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    config["model"]["width"] = 4
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    with pytest.raises(SegrefineError, match="shape mismatches"):
        upload_checkpoint(tmp_path / "ckpt", "alice/x")
    assert "alice/x" not in hub.repos


# -- the registry and backbones ----------------------------------------------------------------------------------


def _entry(**overrides) -> dict:
    entry = {
        "name": "tiny-toy",
        "variant": "lite",
        "dataset": "toy",
        "num_classes": 3,
        "classes": list(CLASSES),
        "repo": "alice/tiny",
        "revision": "main",
        "file": "model.safetensors",
        "sha256": "0" * 64,
        "metrics": {"mIoU": 50.0, "split": "val"},
        "default_for": ["toy"],
    }
    return {**entry, **overrides}


def _registry(models=(), backbones=()) -> dict:
    return {"schema_version": 1, "models": list(models), "backbones": list(backbones)}


def test_packaged_registry_has_backbones_and_the_embedded_model():
    registry = load_registry()
    assert [m.name for m in registry.models] == ["lite-camvid"]
    assert [b.repo for b in registry.backbones] == ["timm/resnet18.a1_in1k", "timm/resnet50.a1_in1k", "timm/resnet101.a1h_in1k"]
    assert all(b.file == "model.safetensors" for b in registry.backbones)
    assert registry.backbone("resnet50") is registry.backbone("timm/resnet50.a1_in1k")


def test_registry_default_weights():
    registry = validate_registry(_registry([_entry()]), "test")
    assert default_weights("toy", registry).name == "tiny-toy"
    with pytest.raises(SegrefineError, match="no default checkpoint for 'ade20k' .*tiny-toy"):
        default_weights("ade20k", registry)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"models": [], "backbones": []}, "lacks schema_version"),
        (_registry([_entry(sha256="abc")]), r"models\[0\] \(tiny-toy\): sha256 must be 64"),
        (_registry([_entry(variant="huge")]), "variant must be one of lite, base, large"),
        (_registry([_entry(classes=["a"])]), "classes must be a list of num_classes"),
        (_registry([_entry(repo="not a repo")]), "repo must be a Hub repo id"),
        (_registry([_entry(file="model.pth")]), "file must be a relative path ending in .safetensors"),
        (_registry([{k: v for k, v in _entry().items() if k != "metrics"}]), "lacks metrics"),
        (_registry([_entry(colour="red")]), "unknown keys colour"),
        (_registry([_entry(), _entry()]), "repeat the name tiny-toy"),
        (_registry([_entry(), _entry(name="other")]), "repeat the default_for value toy"),
        (_registry(backbones=[{"arch": "r18", "variants": [], "repo": "a/b", "revision": "main", "file": "m.safetensors"}]), "lacks sha256"),
    ],
)
def test_registry_schema_errors(data, message):
    with pytest.raises(SegrefineError, match=message):
        validate_registry(data, "zoo.json")


def test_registry_sha256_is_checked(tmp_path, hub, tiny_models, monkeypatch):
    save_tiny(tmp_path / "ckpt")
    upload_checkpoint(tmp_path / "ckpt", "alice/tiny")
    digest = hashlib.sha256((tmp_path / "ckpt" / "model.safetensors").read_bytes()).hexdigest()
    registry = validate_registry(_registry([_entry(sha256=digest), _entry(name="corrupt", sha256="f" * 64, default_for=[])]), "test")
    monkeypatch.setattr(reference, "load_registry", lambda: registry)
    assert resolve("tiny-toy").weights_path.is_file()
    with pytest.raises(SegrefineError, match=r"sha256 of .* does not match registry entry corrupt \(alice/tiny@main\)"):
        resolve("corrupt")


def test_fetch_backbone(hub, monkeypatch):
    state = {"conv1.weight": torch.randn(2, 3, 1, 1), "fc.bias": torch.randn(2)}
    blob = _safetensors_bytes(state)
    hub.add_repo("timm/resnet18.a1_in1k", {"model.safetensors": blob, "config.json": b'{"architecture": "resnet18"}'})
    fetched = fetch_backbone("timm/resnet18.a1_in1k")
    assert fetched.keys() == state.keys() and all(torch.equal(fetched[k], state[k]) for k in state)
    assert pull("timm/resnet18.a1_in1k").read_bytes() == blob

    pinned = BackboneEntry("resnet18", ("lite",), "timm/resnet18.a1_in1k", "main", "model.safetensors", sha256="0" * 64)
    bad = Registry(models=(), backbones=(pinned,))
    monkeypatch.setattr(reference, "load_registry", lambda: bad)
    with pytest.raises(SegrefineError, match="does not match backbone timm/resnet18.a1_in1k@main"):
        fetch_backbone("timm/resnet18.a1_in1k")
    with pytest.raises(SegrefineError, match="Hub repo timm/resnet50.a1_in1k not found"):
        fetch_backbone("timm/resnet50.a1_in1k")


def _safetensors_bytes(state: dict) -> bytes:
    from safetensors.torch import save

    return save(state)


# -- model card --------------------------------------------------------------------------------------------------


def test_model_card_metadata_and_body():
    config = {
        "model": {"variant": "lite", "num_classes": 3, "memory": True},
        "dataset": "cityscapes",
        "classes": list(CLASSES),
        "palette": [list(c) for c in PALETTE],
        "metrics": {"mIoU": 0.7512, "aAcc": 0.95, "boundary_mIoU": None, "split": "val",
                    "per_class": {"road": {"iou": 0.9}, "car": {"iou": 0.8}, "sky": {"iou": None}}},
    }
    card = model_card(config, repo_id="alice/tiny", params=12_345_678, gmacs=120.5, input_size=(1024, 2048))
    front, body = card.split("---\n", 2)[1:]
    meta = yaml.safe_load(front)
    assert meta["library_name"] == "segrefine" and meta["datasets"] == ["cityscapes"]
    assert {"segrefine", "semantic-segmentation", "resnet18"} <= set(meta["tags"])
    assert set(meta["metrics"]) == {"mean_iou", "overall_accuracy"}
    results = meta["model-index"][0]["results"][0]
    assert results["dataset"]["split"] == "val"
    assert {m["type"]: m["value"] for m in results["metrics"]} == {"mean_iou": 75.12, "overall_accuracy": 95.0}
    assert "| mIoU | 75.12 |" in body and "12.35 M" in body and "120.5" in body and "1×3×1024×2048" in body
    assert "| 0 | road | 128, 64, 128 | 90.00 |" in body and "| 2 | sky | 70, 130, 180 | – |" in body
    assert 'SegRefineModel.from_pretrained("alice/tiny")' in body


def test_model_card_of_metrics_on_training_frames_claims_no_evaluation():
    config = {"model": {"variant": "lite"}, "dataset": "camvid", "classes": ["a"], "palette": [[1, 2, 3]],
              "metrics": {"mIoU": 0.79, "split": "val", "held_out": False}}  # fmt: skip
    card = model_card(config, name="x")
    meta = yaml.safe_load(card.split("---\n", 2)[1])
    assert "model-index" not in meta and meta["metrics"] == ["mean_iou"]
    assert "## Results (camvid val, frames it trained on, %)" in card and "| mIoU | 79.00 |" in card
    assert "held_out" not in card


def test_model_card_without_metrics():
    card = model_card({"model": {"variant": "base"}, "dataset": "toy", "classes": ["a"], "palette": [[1, 2, 3]]})
    meta = yaml.safe_load(card.split("---\n", 2)[1])
    assert "model-index" not in meta and "metrics" not in meta and "resnet50" in meta["tags"]
    assert "## Results" not in card


def test_model_push_to_hub_and_from_pretrained_round_trip(hub):
    from segrefine import SegRefineModel, build_model

    model = build_model("lite", 3, aux=False).eval()
    model.info = {"dataset": "toy", "classes": list(CLASSES), "palette": [list(c) for c in PALETTE],
                  "metrics": {"mIoU": 0.5, "split": "val"}}  # fmt: skip
    url = model.push_to_hub("alice/lite")
    assert url.startswith(f"{hub.url}/alice/lite/commit/")
    files = hub.files("alice/lite")
    assert {"README.md", "config.json", "model.safetensors"} <= set(files)
    card = files["README.md"].decode()
    assert "library_name: segrefine" in card and "model-index" in card and "mean_iou" in card
    loaded = SegRefineModel.from_pretrained("alice/lite")
    assert same_state(loaded, model) and loaded.info["metrics"]["mIoU"] == 0.5


def test_model_push_to_a_new_branch_and_without_a_token(hub, monkeypatch):
    from segrefine import SegRefineModel, build_model

    model = build_model("lite", 3, aux=False).eval()
    model.info = {"dataset": "toy", "classes": list(CLASSES), "palette": [list(c) for c in PALETTE]}
    model.push_to_hub("alice/lite", revision="v2")  # the branch does not exist yet
    assert "model.safetensors" in hub.files("alice/lite", "v2") and "model.safetensors" not in hub.files("alice/lite")
    assert same_state(SegRefineModel.from_pretrained("alice/lite@v2"), model)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("segrefine.hub.reference.get_token", lambda: None)
    with pytest.raises(SegrefineError, match="pushing to the Hub needs a Hugging Face token"):
        model.push_to_hub("alice/other")
