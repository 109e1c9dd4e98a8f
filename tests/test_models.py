"""pipeline.models: octopi YAML + state_dict -> networks, ensembles, and every error path (spec section 2)."""

from __future__ import annotations

import re

import pytest
import torch
import yaml

from pipeline.errors import ModelError
from pipeline.models import check_labels, load_ensemble, read_model_config, split_paths
from pipeline.objects import ParticleObject

LABELS = {"apo-ferritin": 1, "ribosome": 2}

# Tiny configs: every architecture builds and runs in well under a second.
TINY = {
    "Unet": {"architecture": "Unet", "num_classes": 3, "dim_in": 16, "channels": [4, 8, 8],
             "strides": [2, 1], "num_res_units": 1, "dropout": 0.1},
    "SegResNet": {"architecture": "SegResNet", "num_classes": 3, "dim_in": 16, "init_filters": 4,
                  "blocks_down": [1, 1], "dsdepth": 1, "act": "prelu", "norm": "instance"},
    "DynUNet": {"architecture": "DynUNet", "num_classes": 3, "dim_in": 16, "kernel_size": [3, 3, 3],
                "strides": [1, 2, 2], "upsample_kernel_size": [2, 2], "filters": [4, 8, 8],
                "norm_name": ["INSTANCE", {"affine": True}], "res_block": True},
    "SwinUNETR": {"architecture": "SwinUNETR", "num_classes": 3, "dim_in": 64, "feature_size": 12,
                  "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "window_size": 2, "drop_rate": 0.0,
                  "attn_drop_rate": 0.0, "dropout_path_rate": 0.0, "use_checkpoint": False},
}


def write_config(tmp_path, model: dict, labels=LABELS, name="model.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"model": model, "labels": labels}))
    return str(path)


def write_weights(tmp_path, config_path, name="model.pth", seed=0):
    """Fresh network from the config with seeded random weights, saved as octopi does (state_dict)."""
    from pipeline.models import build_network

    torch.manual_seed(seed)
    net = build_network(read_model_config(config_path))
    path = tmp_path / name
    torch.save(net.state_dict(), path)
    return str(path), net.eval()


@pytest.mark.parametrize("arch", sorted(TINY))
def test_strict_load_reproduces_saved_network(tmp_path, arch):
    if arch == "SwinUNETR":
        pytest.importorskip("einops", reason="MONAI's SwinUNETR needs einops")
    cfg = write_config(tmp_path, TINY[arch])
    weights, original = write_weights(tmp_path, cfg, seed=3)
    ens = load_ensemble(cfg, weights, device="cpu")
    assert len(ens.models) == 1 and ens.num_classes == 3 and ens.labels == LABELS
    assert ens.dim_in == TINY[arch]["dim_in"]
    net = ens.models[0]
    assert not net.training
    side = TINY[arch]["dim_in"]
    x = torch.randn(1, 1, side, side, side, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        got, want = net(x), original(x)
    assert got.shape == (1, 3, side, side, side)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_ensemble_one_config_several_weights(tmp_path):
    cfg = write_config(tmp_path, TINY["Unet"])
    w1, n1 = write_weights(tmp_path, cfg, "a.pth", seed=1)
    w2, n2 = write_weights(tmp_path, cfg, "b.pth", seed=2)
    ens = load_ensemble(cfg, f"{w1},{w2}", device="cpu")
    assert len(ens.models) == 2 and ens.config_paths == [cfg, cfg] and ens.weight_paths == [w1, w2]
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.inference_mode():
        assert torch.equal(ens.models[1](x), n2(x))
        assert not torch.equal(ens.models[0](x), ens.models[1](x))


def test_split_paths():
    assert split_paths("a.yaml, b.yaml,") == ["a.yaml", "b.yaml"]
    assert split_paths(["a.pth", "b.pth,c.pth"]) == ["a.pth", "b.pth", "c.pth"]
    assert split_paths(None) == []


def test_unequal_list_lengths(tmp_path):
    cfg = write_config(tmp_path, TINY["Unet"])
    cfg2 = write_config(tmp_path, TINY["Unet"], name="other.yaml")
    w, _ = write_weights(tmp_path, cfg)
    with pytest.raises(ModelError, match=r"2 model configs .* but 3 weights files"):
        load_ensemble([cfg, cfg2], [w, w, w], device="cpu")


def test_unknown_architecture_names_file_and_value(tmp_path):
    cfg = write_config(tmp_path, dict(TINY["Unet"], architecture="ResNet50"))
    with pytest.raises(ModelError, match=r"model\.yaml.*unknown architecture.*'ResNet50'.*Unet, SegResNet"):
        read_model_config(cfg)


@pytest.mark.parametrize("arch,key", [("Unet", "channels"), ("Unet", "num_classes"), ("DynUNet", "kernel_size"),
                                      ("SegResNet", "init_filters"), ("SwinUNETR", "feature_size")])
def test_missing_key_names_file_and_key(tmp_path, arch, key):
    model = {k: v for k, v in TINY[arch].items() if k != key}
    cfg = write_config(tmp_path, model)
    w = tmp_path / "x.pth"
    torch.save({}, w)
    with pytest.raises(ModelError, match=rf"model\.yaml.*'model\.{key}' is missing"):
        load_ensemble(cfg, str(w), device="cpu")


def test_weights_given_as_the_model_config_says_so(tmp_path):
    # a newcomer's slip: -mc and -mw swapped; torch's zip bytes are not text
    cfg = write_config(tmp_path, TINY["Unet"])
    w, _ = write_weights(tmp_path, cfg)
    with pytest.raises(ModelError, match=r"\.pth' is not a text file \(a \.pth weights file\? -mc takes the YAML"):
        read_model_config(w)


@pytest.mark.parametrize("damage", ["truncated", "text"])
def test_an_unreadable_weights_file_gets_one_line(tmp_path, damage):
    cfg = write_config(tmp_path, TINY["Unet"])
    w, _ = write_weights(tmp_path, cfg)
    data = open(w, "rb").read()
    with open(w, "wb") as fh:
        fh.write(data[: len(data) // 2] if damage == "truncated" else b"not weights at all\n" * 50)
    with pytest.raises(ModelError, match=r"model\.pth' cannot be read by torch\.load .*truncated or corrupt") as info:
        load_ensemble(cfg, w, device="cpu")
    assert "\n" not in str(info.value) and "weights_only` set to `False`" not in str(info.value)


def test_weights_with_python_objects_say_what_to_save(tmp_path):
    cfg = write_config(tmp_path, TINY["Unet"])
    w = tmp_path / "checkpoint.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "optimizer": ModelError("not a tensor")}, w)
    with pytest.raises(ModelError, match=r"checkpoint\.pth' .*Unsupported global.*save model\.state_dict\(\) alone"):
        load_ensemble(cfg, str(w), device="cpu")


def test_missing_labels(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"model": TINY["Unet"]}))
    with pytest.raises(ModelError, match=r"m\.yaml.*'labels'.*missing"):
        read_model_config(path)


def test_label_outside_num_classes(tmp_path):
    cfg = write_config(tmp_path, TINY["Unet"], labels={"a": 1, "b": 5})
    with pytest.raises(ModelError, match=r"outside 0\.\.2"):
        read_model_config(cfg)


def test_swinunetr_without_einops_says_so(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "einops" else real(name, *a))
    cfg = write_config(tmp_path, TINY["SwinUNETR"])
    w = tmp_path / "x.pth"
    torch.save({}, w)
    with pytest.raises(ModelError, match="needs the 'einops' package"):
        load_ensemble(cfg, str(w), device="cpu")


def test_swinunetr_window_not_divisible_by_32(tmp_path):
    cfg = write_config(tmp_path, dict(TINY["SwinUNETR"], dim_in=48))
    w = tmp_path / "x.pth"
    torch.save({}, w)
    with pytest.raises(ModelError, match="divisible by 32.*dim_in=48"):
        load_ensemble(cfg, str(w), device="cpu")


def test_missing_files(tmp_path):
    cfg = write_config(tmp_path, TINY["Unet"])
    with pytest.raises(ModelError, match=r"nope\.pth.*do not exist"):
        load_ensemble(cfg, str(tmp_path / "nope.pth"), device="cpu")
    with pytest.raises(ModelError, match=r"nope\.yaml.*does not exist"):
        load_ensemble(str(tmp_path / "nope.yaml"), str(tmp_path / "nope.pth"), device="cpu")


def test_unreadable_weights(tmp_path):
    cfg = write_config(tmp_path, TINY["Unet"])
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match=r"bad\.pth.*cannot be read"):
        load_ensemble(cfg, str(bad), device="cpu")


def test_weights_with_other_num_classes_name_tensor_and_shapes(tmp_path):
    cfg = write_config(tmp_path, TINY["Unet"])
    other = write_config(tmp_path, dict(TINY["Unet"], num_classes=5), name="five.yaml")
    w, _ = write_weights(tmp_path, other)
    with pytest.raises(ModelError) as info:
        load_ensemble(cfg, w, device="cpu")
    msg = str(info.value)
    assert "model.yaml" in msg and "model.pth" in msg
    # the tensor is named and both shapes appear, the config's (3 classes) first
    from pipeline.models import build_network

    name = re.search(r"tensor '([^']+)'", msg).group(1)
    want = tuple(build_network(read_model_config(cfg)).state_dict()[name].shape)
    got = tuple(torch.load(w, weights_only=True)[name].shape)
    assert want != got and msg.index(str(want)) < msg.index(str(got))
    assert "num_classes=3 but the weights have 5 output channels" in msg


def test_weights_of_another_architecture_report_missing_keys(tmp_path):
    cfg = write_config(tmp_path, TINY["Unet"])
    dyn = write_config(tmp_path, TINY["DynUNet"], name="dyn.yaml")
    w, _ = write_weights(tmp_path, dyn)
    with pytest.raises(ModelError, match=r"missing from the weights.*unknown to the config"):
        load_ensemble(cfg, w, device="cpu")


def test_wrapped_and_prefixed_state_dict(tmp_path):
    cfg = write_config(tmp_path, TINY["Unet"])
    w, net = write_weights(tmp_path, cfg)
    sd = torch.load(w, weights_only=True)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, wrapped)
    ens = load_ensemble(cfg, str(wrapped), device="cpu")
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.inference_mode():
        assert torch.equal(ens.models[0](x), net(x))


def test_ensemble_members_must_agree(tmp_path):
    a = write_config(tmp_path, TINY["Unet"], name="a.yaml")
    b = write_config(tmp_path, TINY["Unet"], labels={"apo-ferritin": 2, "ribosome": 1}, name="b.yaml")
    wa, _ = write_weights(tmp_path, a, "a.pth")
    wb, _ = write_weights(tmp_path, b, "b.pth")
    with pytest.raises(ModelError, match="disagree on labels"):
        load_ensemble([a, b], [wa, wb], device="cpu")


OBJECTS = [ParticleObject("apo-ferritin", 1, 60.0), ParticleObject("ribosome", 2, 150.0),
           ParticleObject("thyroglobulin", 3, 130.0)]


def test_check_labels_agrees(caplog):
    caplog.set_level("INFO")
    assert check_labels({"apo-ferritin": 1, "ribosome": 2}, OBJECTS) is None  # a subset of the project is fine
    assert check_labels({"background": 0, "apo-ferritin": 1}, OBJECTS) is None
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
    # project objects the model lacks are named (not segmented, so not picked)
    assert any("not segmented" in r.getMessage() and "ribosome" in r.getMessage() for r in caplog.records)


def test_check_labels_foreign_name_warns(caplog):
    check_labels({"apo-ferritin": 1, "membrane": 7}, OBJECTS)
    assert "membrane" in caplog.text


@pytest.mark.parametrize("labels,pattern", [
    ({"apo-ferritin": 2, "ribosome": 1}, r"'apo-ferritin' is label 2 in the model but 1 in the copick project"),
    ({"apo-ferritin": 1, "virus": 3}, r"label 3 is 'virus' in the model but 'thyroglobulin'"),
])
def test_check_labels_disagreement(labels, pattern):
    with pytest.raises(ModelError, match=pattern):
        check_labels(labels, OBJECTS, where="model config 'm.yaml'")
