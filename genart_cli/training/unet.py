"""Train an unconditional latent-diffusion UNet on the latents of a trained autoencoder.

The UNet learns to predict the noise added to scaled latents z * scale_factor, where
scale_factor = 1 / std(z) over the training set (latent-diffusion's scale_by_std), so the
diffusion runs on unit-variance latents. EMA weights are kept with a warm-up; the exported file
contains whichever of EMA and raw weights has the lower held-out loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoints.native import load_bundle, save_bundle
from ..diffusion.schedule import ScheduleConfig, make_alphas_cumprod
from ..errors import ModelError
from ..models.autoencoder import parameter_count
from ..models.unet import UNetConfig, UNetModel
from .data import load_image_folder, split_holdout, to_model_range
from .loop import EMA, begin_step, bf16_autocast, resume, save_state, training_progress


@dataclass
class UNetTraining:
    data: Path
    autoencoder: Path
    out: Path
    run_dir: Path
    image_size: int = 64
    max_steps: int = 6000
    batch_size: int = 64
    learning_rate: float = 5e-4
    holdout_fraction: float = 0.05
    seed: int = 0
    bf16: bool = True
    max_minutes: float | None = None
    checkpoint_seconds: float = 120.0
    eval_every: int = 500
    min_snr_gamma: float | None = 5.0
    model_card: str = ""
    quiet: bool = False


def default_config(latent_size: int, channels: int) -> UNetConfig:
    return UNetConfig(in_channels=channels, out_channels=channels, model_channels=64, num_res_blocks=2,
                      attention_resolutions=(2, 4, 8), channel_mult=(1, 2, 2, 2), num_head_channels=32,
                      image_size=latent_size)


@torch.no_grad()
def encode_all(autoencoder, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """Encode uint8 images (N, 3, H, W) to fp32 latents before quantization, as diffusion uses them."""
    return torch.cat([autoencoder.encode(to_model_range(images[i:i + batch_size]))
                      for i in range(0, len(images), batch_size)])


def diffusion_loss(unet: UNetModel, z0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                   alphas_cumprod: torch.Tensor, bf16: bool, min_snr_gamma: float | None = None) -> torch.Tensor:
    """Mean squared error of the predicted noise for x_t = sqrt(a_t) z0 + sqrt(1 - a_t) noise.

    With min_snr_gamma, each sample's error is weighted by min(SNR, gamma) / SNR (Hang et al. 2023,
    "Efficient Diffusion Training via Min-SNR Weighting"), which trains faster on a short budget.
    """
    a = alphas_cumprod[t].float()[:, None, None, None]
    x_t = a.sqrt() * z0 + (1 - a).sqrt() * noise
    with bf16_autocast(bf16):
        eps = unet(x_t, t)
    per_sample = (eps.float() - noise).pow(2).mean(dim=(1, 2, 3))
    if min_snr_gamma is not None:
        snr = a.flatten() / (1 - a.flatten())
        per_sample = per_sample * snr.clamp(max=min_snr_gamma) / snr
    return per_sample.mean()


@torch.no_grad()
def heldout_loss(unet: UNetModel, latents: torch.Tensor, alphas_cumprod: torch.Tensor, repeats: int = 8) -> float:
    """Held-out noise-prediction loss with fixed timesteps and noise, so values compare across evals."""
    generator = torch.Generator().manual_seed(1234)
    was_training = unet.training
    unet.eval()
    total = 0.0
    for _ in range(repeats):
        t = torch.randint(len(alphas_cumprod), (len(latents),), generator=generator)
        noise = torch.randn(latents.shape, generator=generator)
        total += diffusion_loss(unet, latents, t, noise, alphas_cumprod, bf16=False).item()
    unet.train(was_training)
    return total / repeats


def train_unet(job: UNetTraining, log=print) -> dict:
    torch.manual_seed(job.seed)
    bundle = load_bundle(job.autoencoder)
    if bundle.autoencoder is None:
        raise ModelError(f"{job.autoencoder}: contains no autoencoder; train one with `genart train autoencoder`")
    autoencoder = bundle.autoencoder.eval()

    images, _ = load_image_folder(job.data, job.image_size)
    train_idx, held_idx = split_holdout(len(images), job.holdout_fraction, job.seed)
    train_latents = encode_all(autoencoder, images[train_idx])
    held_latents = encode_all(autoencoder, images[held_idx])
    scale_factor = 1.0 / train_latents.std().item()
    train_latents, held_latents = train_latents * scale_factor, held_latents * scale_factor
    log(f"latents {tuple(train_latents.shape[1:])} for {len(train_latents)} training and "
        f"{len(held_latents)} held-out images; scale_factor {scale_factor:.4f}")

    schedule = ScheduleConfig()
    alphas_cumprod = make_alphas_cumprod(schedule)
    cfg = default_config(train_latents.shape[-1], train_latents.shape[1])
    unet = UNetModel(cfg)
    ema = EMA(unet)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=job.learning_rate, weight_decay=0.0)
    state_path = job.run_dir / "unet-state.pt"
    step, history, generator, clock = resume(state_path, job.seed,
                                             {"model": unet, "ema": ema, "optimizer": optimizer}, log)
    log(f"UNet: {parameter_count(unet) / 1e6:.2f}M parameters")

    def checkpoint():
        save_state(state_path, {"model": unet.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                                "step": step, "history": history, "generator": generator.get_state(),
                                "elapsed": clock.elapsed})
        raw_loss = heldout_loss(unet, held_latents, alphas_cumprod)
        ema_loss = heldout_loss(ema.model, held_latents, alphas_cumprod)
        chosen = "ema" if ema_loss <= raw_loss else "raw"
        card = (f"{job.model_card} UNet: {step} steps, {clock.elapsed / 60:.1f} min, {chosen} weights, "
                f"held-out loss {min(raw_loss, ema_loss):.4f}").strip()
        save_bundle(job.out, autoencoder=autoencoder, unet=ema.model if chosen == "ema" else unet,
                    schedule=schedule, scale_factor=scale_factor, model_card=card, dtype=torch.float16,
                    extra={"training": {"unet_steps": step, "unet_minutes": round(clock.elapsed / 60, 1),
                                        "weights": chosen, "heldout_loss_raw": round(raw_loss, 5),
                                        "heldout_loss_ema": round(ema_loss, 5), "history": history,
                                        "autoencoder": bundle.extra.get("training", {})}})
        return raw_loss, ema_loss

    last_checkpoint = clock.this_run
    unet.train()
    with training_progress(job.quiet) as progress:
        task = progress.add_task("unet", total=job.max_steps, completed=step, status="")
        while step < job.max_steps:
            if not begin_step(job, step, clock, optimizer, log):
                break

            batch_idx = torch.randint(len(train_latents), (job.batch_size,), generator=generator)
            z0 = train_latents[batch_idx]
            t = torch.randint(len(alphas_cumprod), (job.batch_size,), generator=generator)
            noise = torch.randn(z0.shape, generator=generator)
            loss = diffusion_loss(unet, z0, t, noise, alphas_cumprod, job.bf16, job.min_snr_gamma)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            optimizer.step()
            ema.update(unet)
            step += 1

            if step % job.eval_every == 0:
                value = heldout_loss(ema.model, held_latents, alphas_cumprod)
                history.append({"step": step, "minutes": round(clock.elapsed / 60, 2), "heldout_loss_ema": round(value, 5),
                                "train_loss": round(loss.item(), 5)})
                log(f"step {step}: held-out loss (EMA) {value:.4f}, train loss {loss.item():.4f}, "
                    f"{clock.elapsed / 60:.1f} min")
            if clock.this_run - last_checkpoint > job.checkpoint_seconds:
                checkpoint()
                last_checkpoint = clock.this_run
            progress.update(task, completed=step, status=f"loss {loss.item():.4f}")
    raw_loss, ema_loss = checkpoint()
    return {"steps": step, "heldout_loss_raw": raw_loss, "heldout_loss_ema": ema_loss}
