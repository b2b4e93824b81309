"""Configs inferred from tensor names and shapes equal the configs the models were built from."""

from __future__ import annotations

import pytest

from genart_cli.checkpoints.infer import infer_autoencoder_config, infer_unet_config
from genart_cli.errors import ModelError
from genart_cli.models.autoencoder import Autoencoder, AutoencoderConfig
from genart_cli.models.unet import UNetConfig, UNetModel

AE_CONFIGS = {
    "vq-f4": dict(kind="vq", ch=32, ch_mult=(1, 2, 4), n_embed=64, z_channels=3, embed_dim=3),
    "vq-f4-noattn": dict(kind="vq", ch=32, ch_mult=(1, 2, 4), n_embed=64, z_channels=3, embed_dim=3,
                         mid_attention=False),
    "vq-f8": dict(kind="vq", ch=32, ch_mult=(1, 2, 2, 4), n_embed=32, z_channels=4, embed_dim=4,
                  attn_resolutions=(32,)),
    "kl-f8": dict(kind="kl", ch=32, ch_mult=(1, 2, 4, 4), n_embed=0, z_channels=4, embed_dim=4),
}

UNET_CONFIGS = {
    "celebahq-like": dict(model_channels=32, channel_mult=(1, 2, 3, 4), attention_resolutions=(8, 4, 2),
                          num_head_channels=32),
    "bsr_sr-like": dict(in_channels=6, model_channels=32, channel_mult=(1, 2, 2, 4), attention_resolutions=(8,),
                        num_head_channels=32),
    "churches-like": dict(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1, 2, 2, 4, 4),
                          attention_resolutions=(1, 2, 4, 8), use_scale_shift_norm=True, resblock_updown=True,
                          num_heads=8, num_head_channels=-1),
    "one-block-labels": dict(model_channels=32, num_res_blocks=1, channel_mult=(1, 2), attention_resolutions=(2,),
                             num_classes=10, num_head_channels=32),
}


@pytest.mark.parametrize("name", sorted(AE_CONFIGS))
def test_autoencoder_config_inferred(name):
    config = AutoencoderConfig(resolution=256, **AE_CONFIGS[name])
    inferred, defaulted = infer_autoencoder_config(Autoencoder(config).state_dict(), name)
    assert inferred == config
    assert defaulted == ["resolution"]


@pytest.mark.parametrize("name", sorted(UNET_CONFIGS))
def test_unet_config_inferred(name):
    config = UNetConfig(image_size=64, **UNET_CONFIGS[name])
    inferred, _ = infer_unet_config(UNetModel(config).state_dict(), name)
    for field in ("in_channels", "out_channels", "model_channels", "num_res_blocks", "attention_resolutions",
                  "channel_mult", "use_scale_shift_norm", "resblock_updown", "num_classes"):
        expected, actual = getattr(config, field), getattr(inferred, field)
        if field == "attention_resolutions":
            expected, actual = sorted(expected), sorted(actual)
        assert actual == expected, field


def test_unet_inferred_loads_strictly():
    config = UNetConfig(image_size=64, **UNET_CONFIGS["bsr_sr-like"])
    state = UNetModel(config).state_dict()
    inferred, _ = infer_unet_config(state, "bsr_sr-like")
    UNetModel(inferred).load_state_dict(state, strict=True)


def test_autoencoder_inference_rejects_unet():
    state = UNetModel(UNetConfig(model_channels=32, channel_mult=(1, 2))).state_dict()
    with pytest.raises(ModelError, match="not a latent-diffusion or taming autoencoder"):
        infer_autoencoder_config(state, "unet.safetensors")


def test_unet_inference_reads_cross_attention():
    from genart_cli.models.unet import UNetConfig, UNetModel

    config = UNetConfig(model_channels=32, channel_mult=(1, 2), attention_resolutions=(2,), num_heads=1,
                        num_head_channels=-1, context_dim=48, transformer_depth=2, image_size=64)
    inferred, defaulted = infer_unet_config(UNetModel(config).state_dict(), "cin.safetensors")
    assert (inferred.context_dim, inferred.transformer_depth, inferred.attention_resolutions) == (48, 2, (2,))
    assert "num_head_channels" in defaulted
