"""The noise schedule and one DDIM step against values computed by hand."""

import math

import pytest
import torch

from genart_cli.diffusion.denoiser import EpsDenoiser
from genart_cli.diffusion.samplers import ddim_timesteps, sample_ddim
from genart_cli.diffusion.schedule import ScheduleConfig, make_alphas_cumprod, make_betas


def test_betas_are_squared_linspace_of_roots():
    betas = make_betas(ScheduleConfig(linear_start=0.0015, linear_end=0.0195))
    assert len(betas) == 1000
    assert betas.dtype == torch.float64
    assert math.isclose(betas[0].item(), 0.0015, rel_tol=1e-12)
    assert math.isclose(betas[-1].item(), 0.0195, rel_tol=1e-12)
    middle = ((0.0015**0.5 + 0.0195**0.5) / 2) ** 2  # between the two middle knots of 1000 points
    assert betas[499].item() < middle < betas[500].item()


def test_alphas_cumprod_by_hand():
    alphas_cumprod = make_alphas_cumprod(ScheduleConfig())
    betas = make_betas(ScheduleConfig())
    assert math.isclose(alphas_cumprod[0].item(), 1 - 0.0015, rel_tol=1e-12)
    assert math.isclose(alphas_cumprod[1].item(), (1 - 0.0015) * (1 - betas[1].item()), rel_tol=1e-12)
    assert bool((alphas_cumprod[1:] < alphas_cumprod[:-1]).all())


def test_ddim_timesteps_offset_by_one():
    assert ddim_timesteps(50) == list(range(1, 1000, 20))
    assert ddim_timesteps(4) == [1, 251, 501, 751]
    assert len(ddim_timesteps(30)) == 30
    assert ddim_timesteps(1000) == list(range(1000))


def test_ddim_timesteps_rejects_zero():
    with pytest.raises(ValueError):
        ddim_timesteps(0)


class ConstantEps:
    """A denoiser whose noise estimate is a fixed tensor, to check the update equation alone."""

    def __init__(self, eps: torch.Tensor, alphas_cumprod: torch.Tensor):
        self.eps = eps
        self.alphas_cumprod = alphas_cumprod
        self.calls = []

    def __call__(self, x, t):
        self.calls.append(t)
        a = float(self.alphas_cumprod[t])
        return self.eps, (x - (1 - a) ** 0.5 * self.eps) / a**0.5


def test_one_ddim_step_by_hand():
    alphas_cumprod = make_alphas_cumprod(ScheduleConfig())
    x = torch.tensor([[[[0.5]]]])
    eps = torch.tensor([[[[0.2]]]])
    denoiser = ConstantEps(eps, alphas_cumprod)
    out = sample_ddim(denoiser, x, alphas_cumprod, steps=1, eta=0.0)
    # One step: t = 1, and the step lands on alphas_cumprod[0].
    a, a_prev = alphas_cumprod[1].item(), alphas_cumprod[0].item()
    x0 = (0.5 - math.sqrt(1 - a) * 0.2) / math.sqrt(a)
    expected = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * 0.2
    assert denoiser.calls == [1]
    assert math.isclose(out.item(), expected, rel_tol=1e-6)


def test_two_ddim_steps_with_eta_by_hand():
    alphas_cumprod = make_alphas_cumprod(ScheduleConfig())
    x = torch.tensor([[[[1.0]]]])
    eps = torch.tensor([[[[-0.3]]]])
    noise = torch.tensor([[[[0.7]]]])
    denoiser = ConstantEps(eps, alphas_cumprod)
    out = sample_ddim(denoiser, x, alphas_cumprod, steps=2, eta=1.0, noise=lambda: noise)

    value = 1.0
    for t, t_prev in ((501, 1), (1, 0)):
        a, a_prev = alphas_cumprod[t].item(), alphas_cumprod[t_prev].item()
        sigma = math.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
        x0 = (value - math.sqrt(1 - a) * -0.3) / math.sqrt(a)
        value = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev - sigma**2) * -0.3 + sigma * 0.7
    assert denoiser.calls == [501, 1]
    assert math.isclose(out.item(), value, rel_tol=1e-5)


def test_eps_denoiser_concat_and_x0():
    class Echo(torch.nn.Module):
        config = None

        def forward(self, x, t, labels=None):
            return x[:, :1] + x[:, 1:]

    alphas_cumprod = make_alphas_cumprod(ScheduleConfig())
    denoiser = EpsDenoiser(Echo(), alphas_cumprod, concat=torch.full((1, 1, 2, 2), 0.5))
    eps, denoised = denoiser(torch.ones(1, 1, 2, 2), 10)
    a = alphas_cumprod[10].item()
    assert torch.allclose(eps, torch.full((1, 1, 2, 2), 1.5))
    assert torch.allclose(denoised, torch.full((1, 1, 2, 2), (1 - math.sqrt(1 - a) * 1.5) / math.sqrt(a)))
