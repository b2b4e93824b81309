"""Parity with diffusers: the same random weights, loaded through genart's name mapping, give the
same outputs in fp32 (max abs difference at most 1e-4)."""

from __future__ import annotations

import pytest
import torch

from genart_cli.checkpoints.diffusers_layout import (
    autoencoder_config_from_diffusers,
    autoencoder_to_ldm,
    unet_config_from_diffusers,
    unet_to_ldm,
)
from genart_cli.models.autoencoder import Autoencoder
from genart_cli.models.unet import UNetConfig as UNetModelConfig
from genart_cli.models.unet import UNetModel

diffusers = pytest.importorskip("diffusers")

TOLERANCE = 1e-4


def perturb(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Add noise to every parameter, so zero-initialised layers take part in the comparison."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return model.eval()


def genart_autoencoder(reference) -> Autoencoder:
    config = autoencoder_config_from_diffusers({**reference.config, "_class_name": type(reference).__name__}, "test")
    model = Autoencoder(config).eval()
    model.load_state_dict(autoencoder_to_ldm(reference.state_dict(), len(reference.config.block_out_channels)))
    return model


def genart_unet(reference) -> UNetModel:
    config = unet_config_from_diffusers(dict(reference.config), "test")
    model = UNetModel(config).eval()
    state = unet_to_ldm(reference.state_dict(), reference.config.layers_per_block, reference.config.attention_head_dim)
    model.load_state_dict(state)
    return model


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def vq_pair():
    torch.manual_seed(0)
    reference = diffusers.VQModel(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2 + ("AttnDownEncoderBlock2D",),
        up_block_types=("AttnUpDecoderBlock2D",) + ("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64, 64),
        layers_per_block=2, latent_channels=3, num_vq_embeddings=64, vq_embed_dim=3, norm_num_groups=32)
    perturb(reference)
    return reference, genart_autoencoder(reference)


def test_vq_encode_parity(vq_pair):
    reference, model = vq_pair
    x = torch.randn(2, 3, 32, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert max_diff(model.encode(x), reference.encode(x).latents) <= TOLERANCE


def test_vq_quantize_parity(vq_pair):
    reference, model = vq_pair
    z = torch.randn(2, 3, 8, 10, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        quantized, _, (_, _, reference_indices) = reference.quantize(z)
        ours, indices = model.quantize_latent(z)
    assert torch.equal(indices.flatten(), reference_indices.flatten())
    assert max_diff(ours, quantized) <= TOLERANCE


def test_vq_decode_parity(vq_pair):
    reference, model = vq_pair
    z = torch.randn(2, 3, 8, 10, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert max_diff(model.decode(z), reference.decode(z).sample) <= TOLERANCE
        unquantized = reference.decode(z, force_not_quantize=True).sample
        assert max_diff(model.decode(z, force_not_quantize=True), unquantized) <= TOLERANCE


@pytest.fixture(scope="module")
def kl_pair():
    torch.manual_seed(0)
    reference = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(32, 64, 64), layers_per_block=1,
        latent_channels=4, norm_num_groups=32)
    perturb(reference)
    return reference, genart_autoencoder(reference)


def test_kl_encode_parity(kl_pair):
    reference, model = kl_pair
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert max_diff(model.encode(x), reference.encode(x).latent_dist.mean) <= TOLERANCE


def test_kl_decode_parity(kl_pair):
    reference, model = kl_pair
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert max_diff(model.decode(z), reference.decode(z).sample) <= TOLERANCE


UNET_CASES = {
    # bsr_sr's layout (6-channel concat input, attention at the deepest level), narrowed for the CPU.
    "bsr_sr": dict(in_channels=6, out_channels=3, block_out_channels=(32, 64, 64, 128),
                   down_block_types=("DownBlock2D",) * 3 + ("AttnDownBlock2D",),
                   up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * 3),
    # celebahq's layout (attention at three levels, channel multipliers 1, 2, 3, 4), narrowed for the CPU.
    "celebahq": dict(in_channels=3, out_channels=3, block_out_channels=(32, 64, 96, 128),
                     down_block_types=("DownBlock2D",) + ("AttnDownBlock2D",) * 3,
                     up_block_types=("AttnUpBlock2D",) * 3 + ("UpBlock2D",)),
    "class_labels": dict(in_channels=3, out_channels=3, block_out_channels=(32, 64),
                         down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                         up_block_types=("AttnUpBlock2D", "UpBlock2D"), num_class_embeds=10),
}


@pytest.mark.parametrize("name", sorted(UNET_CASES))
def test_unet_forward_parity(name):
    torch.manual_seed(0)
    reference = diffusers.UNet2DModel(sample_size=16, layers_per_block=2, attention_head_dim=32, norm_num_groups=32,
                                      flip_sin_to_cos=True, freq_shift=0, downsample_padding=1, **UNET_CASES[name])
    perturb(reference)
    model = genart_unet(reference)
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(2, reference.config.in_channels, 16, 16, generator=generator)
    t = torch.tensor([3, 981])
    labels = torch.tensor([1, 7]) if reference.config.num_class_embeds else None
    with torch.no_grad():
        expected = reference(x, t, class_labels=labels).sample
        actual = model(x, t, labels)
    assert max_diff(actual, expected) <= TOLERANCE


class GaussianEps(torch.nn.Module):
    """A stand-in noise predictor, identical for both samplers: the exact one for data ~ N(0, 0.25).

    For that data E[noise | x_t] = sqrt(1 - a) x_t / (0.25 a + 1 - a), so latents stay of order 1
    and the comparison measures the update rule, not float32 rounding of huge values.
    """

    def __init__(self, alphas_cumprod: torch.Tensor):
        super().__init__()
        self.alphas_cumprod = alphas_cumprod.float()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.alphas_cumprod[t][:, None, None, None]
        return (1 - a).sqrt() * x / (0.25 * a + 1 - a) + 0.01 * torch.sin(x)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_scheduler_parity(eta):
    from genart_cli.diffusion.denoiser import EpsDenoiser
    from genart_cli.diffusion.samplers import sample_ddim
    from genart_cli.diffusion.schedule import ScheduleConfig, make_alphas_cumprod

    steps = 50
    alphas_cumprod = make_alphas_cumprod(ScheduleConfig(linear_start=0.0015, linear_end=0.0195))
    predictor = GaussianEps(alphas_cumprod)
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0195,
                                        beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                                        steps_offset=1, timestep_spacing="leading")
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(7)
    x_start = torch.randn(2, 3, 8, 8, generator=generator)
    step_noise = [torch.randn(2, 3, 8, 8, generator=generator) for _ in range(steps)]

    x = x_start.clone()
    for i, t in enumerate(scheduler.timesteps):
        eps = predictor(x, t.repeat(2))
        x = scheduler.step(eps, t, x, eta=eta, variance_noise=step_noise[i]).prev_sample

    class Adapter(torch.nn.Module):
        def forward(self, x, t, labels=None):
            return predictor(x, t)

    noise = iter(step_noise)
    ours = sample_ddim(EpsDenoiser(Adapter(), alphas_cumprod), x_start.clone(), alphas_cumprod, steps, eta=eta,
                       noise=lambda: next(noise))
    assert [int(t) for t in scheduler.timesteps] == list(range(981, 0, -20))
    assert x.abs().max() < 10
    assert max_diff(ours, x) <= TOLERANCE


def test_bsr_sr_full_size_forward():
    """The bsr_sr UNet at its released size: 113.6M parameters, one forward matching diffusers."""
    torch.manual_seed(0)
    reference = diffusers.UNet2DModel(
        sample_size=64, in_channels=6, out_channels=3, block_out_channels=(160, 320, 320, 640), layers_per_block=2,
        down_block_types=("DownBlock2D",) * 3 + ("AttnDownBlock2D",),
        up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * 3, attention_head_dim=32, norm_num_groups=32,
        flip_sin_to_cos=True, freq_shift=0, downsample_padding=1).eval()
    model = genart_unet(reference)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(113.6e6, rel=5e-4)
    assert len(model.state_dict()) == 306
    x = torch.randn(1, 6, 16, 16, generator=torch.Generator().manual_seed(8))
    t = torch.tensor([500])
    with torch.no_grad():
        assert max_diff(model(x, t), reference(x, t).sample) <= TOLERANCE


@pytest.fixture(scope="module")
def crossattn_pair():
    """A narrowed cin256-v2 UNet (one head per level, context 64) in diffusers and in genart.

    diffusers reads attention_head_dim as the head count here (num_attention_heads defaults to it).
    """
    torch.manual_seed(0)
    reference = diffusers.UNet2DConditionModel(
        sample_size=16, in_channels=3, out_channels=3, layers_per_block=2, block_out_channels=(32, 64, 96),
        down_block_types=("CrossAttnDownBlock2D",) * 3, up_block_types=("CrossAttnUpBlock2D",) * 3,
        attention_head_dim=1, cross_attention_dim=64, norm_num_groups=32, flip_sin_to_cos=True,
        freq_shift=0)
    perturb(reference)
    state = unet_to_ldm(reference.state_dict(), 2, 32)
    model = UNetModel(UNetModelConfig(in_channels=3, out_channels=3, model_channels=32, num_res_blocks=2,
                                      attention_resolutions=(1, 2, 4), channel_mult=(1, 2, 3), num_heads=1,
                                      num_head_channels=-1, context_dim=64, image_size=16)).eval()
    model.load_state_dict(state)
    return reference, model


def test_crossattn_unet_forward_parity(crossattn_pair):
    """cin256-v2's SpatialTransformer UNet against UNet2DConditionModel on the same weights."""
    reference, model = crossattn_pair
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 16, 16, generator=generator)
    context = torch.randn(2, 1, 64, generator=generator)
    t = torch.tensor([10, 700])
    with torch.no_grad():
        expected = reference(x, t, encoder_hidden_states=context).sample
        actual = model(x, t, context=context)
    assert max_diff(actual, expected) <= TOLERANCE
    assert max_diff(model(x, t, context=context.flip(0)), expected) > 1e-3  # the context matters
