"""save_bundle and load_bundle, strict loading, and atomic writes, in process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import tiny_autoencoder, tiny_unet
from genart_cli.checkpoints.native import AE_PREFIX, UNET_PREFIX, load_bundle, save_bundle
from genart_cli.errors import ModelError
from genart_cli.runtime.atomic import atomic_path


@pytest.fixture(scope="module")
def models():
    return tiny_autoencoder(0), tiny_unet(0)


def assert_same_state(loaded: torch.nn.Module, original: torch.nn.Module) -> None:
    expected = original.state_dict()
    actual = loaded.state_dict()

    assert sorted(actual) == sorted(expected)
    for name, tensor in expected.items():
        assert actual[name].dtype == tensor.dtype, name
        assert torch.equal(actual[name], tensor), name


def rewrite_checkpoint(source: Path, target: Path, change) -> None:
    """Copy a checkpoint with its metadata, letting `change(tensors)` edit the tensor dict first."""
    with safe_open(str(source), framework="pt") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        metadata = handle.metadata()
    change(tensors)
    save_file(tensors, str(target), metadata=metadata)


def test_roundtrip_autoencoder_state(models, tmp_path):
    autoencoder, unet = models
    save_bundle(tmp_path / "model.safetensors", autoencoder=autoencoder, unet=unet)

    bundle = load_bundle(tmp_path / "model.safetensors")

    assert_same_state(bundle.autoencoder, autoencoder)


def test_roundtrip_unet_state(models, tmp_path):
    autoencoder, unet = models
    save_bundle(tmp_path / "model.safetensors", autoencoder=autoencoder, unet=unet)

    bundle = load_bundle(tmp_path / "model.safetensors")

    assert_same_state(bundle.unet, unet)


def test_roundtrip_configs(models, tmp_path):
    autoencoder, unet = models
    save_bundle(tmp_path / "model.safetensors", autoencoder=autoencoder, unet=unet, scale_factor=0.5,
                model_card="tiny test model", extra={"note": "kept"})

    bundle = load_bundle(tmp_path / "model.safetensors")

    assert bundle.autoencoder.config == autoencoder.config
    assert bundle.unet.config == unet.config
    assert bundle.scale_factor == 0.5
    assert bundle.model_card == "tiny test model"
    assert bundle.extra == {"note": "kept"}


def test_roundtrip_autoencoder_only(models, tmp_path):
    autoencoder, _ = models
    save_bundle(tmp_path / "model.safetensors", autoencoder=autoencoder)

    bundle = load_bundle(tmp_path / "model.safetensors")

    assert bundle.unet is None
    assert_same_state(bundle.autoencoder, autoencoder)


def test_fp16_stored_as_fp16(models, tmp_path):
    autoencoder, unet = models
    save_bundle(tmp_path / "half.safetensors", autoencoder=autoencoder, unet=unet, dtype=torch.float16)

    with safe_open(str(tmp_path / "half.safetensors"), framework="pt") as handle:
        dtypes = {handle.get_tensor(name).dtype for name in handle.keys()}

    assert dtypes == {torch.float16}


@pytest.mark.parametrize("part", ["autoencoder", "unet"])
def test_fp16_loads_rounded_fp32(models, tmp_path, part):
    autoencoder, unet = models
    save_bundle(tmp_path / "half.safetensors", autoencoder=autoencoder, unet=unet, dtype=torch.float16)

    bundle = load_bundle(tmp_path / "half.safetensors")

    original = (autoencoder if part == "autoencoder" else unet).state_dict()
    loaded = getattr(bundle, part).state_dict()
    for name, tensor in original.items():
        assert loaded[name].dtype == torch.float32, name
        assert torch.equal(loaded[name], tensor.half().float()), name


def test_fp16_rounding_changes_weights(models):
    """Guards the test above: the weights are not all exactly representable in fp16."""
    autoencoder, _ = models
    weight = autoencoder.state_dict()["encoder.conv_in.weight"]

    assert not torch.equal(weight.half().float(), weight)


def test_fp16_resave_keeps_fingerprint(models, tmp_path):
    """Latents encoded with an fp16 checkpoint still decode after the same weights are saved again."""
    autoencoder, _ = models
    save_bundle(tmp_path / "first.safetensors", autoencoder=autoencoder, dtype=torch.float16)
    first = load_bundle(tmp_path / "first.safetensors")

    save_bundle(tmp_path / "second.safetensors", autoencoder=first.autoencoder, dtype=torch.float16)
    second = load_bundle(tmp_path / "second.safetensors")

    assert_same_state(second.autoencoder, first.autoencoder)
    assert second.autoencoder_sha256 == first.autoencoder_sha256


@pytest.fixture(scope="module")
def saved_model(models, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("strict") / "model.safetensors"
    autoencoder, unet = models
    save_bundle(path, autoencoder=autoencoder, unet=unet)
    return path


def drop_tensor(tensors):
    del tensors[UNET_PREFIX + "middle_block.1.qkv.weight"]


def add_tensor(tensors):
    tensors[AE_PREFIX + "encoder.extra.weight"] = torch.zeros(4)


def reshape_tensor(tensors):
    tensors[AE_PREFIX + "quant_conv.weight"] = torch.zeros(3, 3, 3, 3)


def add_stray_tensor(tensors):
    tensors["cond_stage_model.weight"] = torch.zeros(4)


@pytest.mark.parametrize("change, words", [
    (drop_tensor, ["1 missing", UNET_PREFIX + "middle_block.1.qkv.weight"]),
    (add_tensor, ["1 unexpected", AE_PREFIX + "encoder.extra.weight"]),
    (reshape_tensor, ["1 wrong shape", AE_PREFIX + "quant_conv.weight (3, 3, 3, 3) (expected (3, 3, 1, 1))"]),
    (add_stray_tensor, ["cond_stage_model.weight"]),
], ids=["missing", "unexpected", "wrong-shape", "stray"])
def test_strict_load_names_tensor(saved_model, tmp_path, change, words):
    path = tmp_path / "damaged.safetensors"
    rewrite_checkpoint(saved_model, path, change)

    with pytest.raises(ModelError) as caught:
        load_bundle(path)

    message = str(caught.value)
    assert str(path) in message
    for word in words:
        assert word in message


def test_strict_load_lists_all_problems(saved_model, tmp_path):
    path = tmp_path / "damaged.safetensors"

    def change(tensors):
        del tensors[AE_PREFIX + "decoder.conv_out.weight"]
        add_tensor(tensors)
        reshape_tensor(tensors)

    rewrite_checkpoint(saved_model, path, change)

    with pytest.raises(ModelError) as caught:
        load_bundle(path)

    message = str(caught.value)
    assert "1 missing" in message
    assert "1 unexpected" in message
    assert "1 wrong shape" in message


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_error_keeps_old(tmp_path, error):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old contents")

    with pytest.raises(error):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half-written new contents")
            raise error("stopped mid-write")

    assert target.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_atomic_save_bundle_error(models, tmp_path, monkeypatch):
    """A save_bundle that fails while writing leaves the previous checkpoint unchanged."""
    autoencoder, _ = models
    target = tmp_path / "model.safetensors"
    save_bundle(target, autoencoder=autoencoder)
    before = target.read_bytes()

    def fail_midway(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr("genart_cli.checkpoints.native.save_file", fail_midway)
    with pytest.raises(OSError):
        save_bundle(target, autoencoder=tiny_autoencoder(1))

    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_atomic_success_replaces(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old contents")

    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new contents")

    assert target.read_bytes() == b"new contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_atomic_success_mode(tmp_path):
    """The result gets the mode a plain open() would give, not mkstemp's 0600."""
    plain = tmp_path / "plain"
    plain.write_bytes(b"")

    with atomic_path(tmp_path / "atomic") as tmp:
        tmp.write_bytes(b"")

    assert os.stat(tmp_path / "atomic").st_mode == os.stat(plain).st_mode
