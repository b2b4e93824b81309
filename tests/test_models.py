"""Shapes and dtypes of the autoencoder and UNet blocks, and their tensor names."""

import pytest
import torch

from genart_cli.models.autoencoder import Autoencoder, AutoencoderConfig, AttnBlock, Downsample, ResnetBlock
from genart_cli.models.unet import AttentionBlock, ResBlock, UNetConfig, UNetModel, timestep_embedding


def small_ae(**overrides) -> Autoencoder:
    values = dict(ch=32, ch_mult=(1, 2, 4), n_embed=16, resolution=32, attn_resolutions=(8,))
    values.update(overrides)
    return Autoencoder(AutoencoderConfig(**values)).eval()


def small_unet(**overrides) -> UNetModel:
    values = dict(model_channels=32, channel_mult=(1, 2), attention_resolutions=(2,), num_head_channels=16, image_size=8)
    values.update(overrides)
    return UNetModel(UNetConfig(**values)).eval()


def test_resnet_block_changes_channels():
    block = ResnetBlock(32, 64)
    assert block(torch.randn(2, 32, 8, 8)).shape == (2, 64, 8, 8)
    assert block.nin_shortcut is not None


def test_downsample_halves_odd_free_sides():
    assert Downsample(32)(torch.randn(1, 32, 16, 12)).shape == (1, 32, 8, 6)


def test_attn_block_keeps_shape():
    assert AttnBlock(32)(torch.randn(2, 32, 4, 5)).shape == (2, 32, 4, 5)


def test_vq_encode_decode_shapes():
    ae = small_ae()
    with torch.no_grad():
        z = ae.encode(torch.randn(2, 3, 32, 48))
        x = ae.decode(z)
    assert z.shape == (2, 3, 8, 12)
    assert x.shape == (2, 3, 32, 48)
    assert x.dtype == torch.float32


def test_vq_decode_quantizes_by_default():
    ae = small_ae()
    z = torch.randn(1, 3, 4, 4)
    with torch.no_grad():
        quantized, indices = ae.quantize_latent(z)
        assert torch.equal(ae.decode(z), ae.decode(quantized, force_not_quantize=True))
        assert torch.equal(ae.decode_indices(indices), ae.decode(z))
    assert indices.shape == (1, 4, 4)
    assert indices.dtype == torch.int64


def test_vq_nearest_index_is_argmin():
    ae = small_ae()
    z = torch.randn(1, 3, 2, 2)
    indices = ae.quantize.nearest_indices(z)
    codebook = ae.quantize.embedding.weight
    for i in range(2):
        for j in range(2):
            distances = ((codebook - z[0, :, i, j]) ** 2).sum(dim=1)
            assert indices[0, i, j] == distances.argmin()


def test_kl_encode_returns_mean_shape():
    ae = small_ae(kind="kl", z_channels=4, embed_dim=4)
    with torch.no_grad():
        z = ae.encode(torch.randn(1, 3, 32, 32))
        sampled = ae.encode(torch.randn(1, 3, 32, 32), sample=True, generator=torch.Generator().manual_seed(0))
    assert z.shape == (1, 4, 8, 8)
    assert sampled.shape == (1, 4, 8, 8)
    assert ae.encoder.conv_out.out_channels == 8


def test_ae_tensor_names_follow_release():
    names = set(small_ae().state_dict())
    for expected in ("encoder.down.0.block.0.norm1.weight", "encoder.down.0.downsample.conv.weight",
                     "encoder.down.2.attn.1.q.weight", "encoder.mid.attn_1.proj_out.weight",
                     "decoder.up.2.block.2.conv2.weight", "decoder.up.1.upsample.conv.weight",
                     "quant_conv.weight", "post_quant_conv.weight", "quantize.embedding.weight"):
        assert expected in names
    assert "decoder.up.0.upsample.conv.weight" not in names
    assert "encoder.down.2.downsample.conv.weight" not in names


def test_noattn_config_drops_mid_attention():
    names = set(small_ae(mid_attention=False, attn_resolutions=()).state_dict())
    assert not any(".attn" in name for name in names)


def test_timestep_embedding_cos_first():
    emb = timestep_embedding(torch.tensor([0, 3]), 8)
    assert emb.shape == (2, 8)
    assert torch.allclose(emb[0, :4], torch.ones(4))
    assert torch.allclose(emb[0, 4:], torch.zeros(4))
    assert torch.isclose(emb[1, 0], torch.cos(torch.tensor(3.0)))
    assert torch.isclose(emb[1, 4], torch.sin(torch.tensor(3.0)))


def test_unet_output_shape_and_dtype():
    unet = small_unet()
    with torch.no_grad():
        out = unet(torch.randn(3, 3, 8, 16), torch.tensor([0, 10, 999]))
    assert out.shape == (3, 3, 8, 16)
    assert out.dtype == torch.float32


def test_unet_concat_channels():
    unet = small_unet(in_channels=6, out_channels=3)
    with torch.no_grad():
        assert unet(torch.randn(1, 6, 8, 8), torch.tensor([5])).shape == (1, 3, 8, 8)


def test_unet_bf16_autocast_runs():
    unet = small_unet()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = unet(torch.randn(1, 3, 8, 8), torch.tensor([5]))
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out.float()).all()


def test_unet_rejects_indivisible_size():
    with pytest.raises(ValueError, match="multiples of 2"):
        small_unet()(torch.randn(1, 3, 7, 8), torch.tensor([1]))


def test_unet_class_labels_required():
    unet = small_unet(num_classes=10)
    assert "label_emb.weight" in unet.state_dict()
    with pytest.raises(ValueError, match="class_labels"):
        unet(torch.randn(1, 3, 8, 8), torch.tensor([1]))
    with torch.no_grad():
        assert unet(torch.randn(1, 3, 8, 8), torch.tensor([1]), torch.tensor([4])).shape == (1, 3, 8, 8)


def test_unet_scale_shift_and_updown():
    unet = small_unet(use_scale_shift_norm=True, resblock_updown=True, num_heads=2, num_head_channels=-1)
    names = set(unet.state_dict())
    assert unet.input_blocks[3][0].updown
    assert "input_blocks.3.0.in_layers.0.weight" in names
    assert "input_blocks.3.0.op.weight" not in names
    assert unet.input_blocks[1][0].emb_layers[1].out_features == 64
    with torch.no_grad():
        assert unet(torch.randn(2, 3, 8, 8), torch.tensor([1, 2])).shape == (2, 3, 8, 8)


def test_unet_tensor_names_follow_release():
    names = set(small_unet().state_dict())
    for expected in ("time_embed.0.weight", "time_embed.2.weight", "input_blocks.0.0.weight",
                     "input_blocks.1.0.in_layers.0.weight", "input_blocks.1.0.emb_layers.1.weight",
                     "input_blocks.1.0.out_layers.3.weight", "input_blocks.3.0.op.weight",
                     "input_blocks.4.0.skip_connection.weight", "input_blocks.4.1.qkv.weight",
                     "middle_block.1.proj_out.weight", "output_blocks.2.2.conv.weight", "out.2.weight"):
        assert expected in names


def attention_reference(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """Legacy attention written out with einsum: per-head [q, k, v] blocks, q and k scaled by d^-1/4."""
    b, width, length = qkv.shape
    d = width // (3 * heads)
    q, k, v = qkv.reshape(b * heads, 3 * d, length).split(d, dim=1)
    scale = d ** -0.25
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale).softmax(dim=-1)
    return torch.einsum("bts,bcs->bct", weight, v).reshape(b, -1, length)


def test_attention_legacy_head_order():
    torch.manual_seed(0)
    block = AttentionBlock(64, num_heads=4).eval()
    torch.nn.init.normal_(block.proj_out.weight)
    x = torch.randn(2, 64, 3, 3)
    with torch.no_grad():
        qkv = block.qkv(block.norm(x.reshape(2, 64, 9)))
        expected = x.reshape(2, 64, 9) + block.proj_out(attention_reference(qkv, 4))
        assert torch.allclose(block(x), expected.reshape(2, 64, 3, 3), atol=1e-5)


def test_resblock_emb_changes_output():
    block = ResBlock(32, 64, 32).eval()
    torch.nn.init.normal_(block.out_layers[-1].weight)
    x = torch.randn(1, 32, 4, 4)
    with torch.no_grad():
        assert not torch.allclose(block(x, torch.zeros(1, 64)), block(x, torch.ones(1, 64)))
