"""Train a VQ autoencoder from a folder of images: L1 reconstruction plus the codebook loss.

Dead codebook entries are restarted from recent encoder outputs, because without that most of
the codebook goes unused. Held-out PSNR is measured on the quantized decode, as sampling uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..checkpoints.native import save_bundle
from ..models.autoencoder import Autoencoder, AutoencoderConfig, parameter_count, psnr
from .data import load_image_folder, split_holdout, to_model_range
from .loop import begin_step, bf16_autocast, resume, save_state, training_progress


@dataclass
class AutoencoderTraining:
    data: Path
    out: Path
    run_dir: Path
    image_size: int = 64
    max_steps: int = 2500
    batch_size: int = 32
    learning_rate: float = 1e-3
    holdout_fraction: float = 0.05
    seed: int = 0
    bf16: bool = True
    max_minutes: float | None = None  # stop this run early (resume continues it)
    checkpoint_seconds: float = 120.0
    eval_every: int = 250
    restart_every: int = 50  # steps between dead-code restarts
    quiet: bool = False


def default_config(image_size: int) -> AutoencoderConfig:
    return AutoencoderConfig(kind="vq", ch=32, ch_mult=(1, 2, 4), num_res_blocks=2, attn_resolutions=(),
                             resolution=image_size, z_channels=3, embed_dim=3, n_embed=512, mid_attention=True)


@torch.no_grad()
def heldout_psnr(model: Autoencoder, images: torch.Tensor, batch_size: int = 64) -> float:
    """PSNR in dB over held-out uint8 images, fp32, decoding through the quantizer."""
    model.eval()
    recon, target = [], []
    for start in range(0, len(images), batch_size):
        x = to_model_range(images[start:start + batch_size])
        recon.append(model.decode(model.encode(x)))
        target.append(x)
    model.train()
    return psnr(torch.cat(recon), torch.cat(target))


def train_autoencoder(job: AutoencoderTraining, log=print) -> dict:
    torch.manual_seed(job.seed)
    images, _ = load_image_folder(job.data, job.image_size)
    train_idx, held_idx = split_holdout(len(images), job.holdout_fraction, job.seed)
    train_images, held_images = images[train_idx], images[held_idx]
    log(f"data: {len(train_images)} training and {len(held_images)} held-out images from {job.data}")

    cfg = default_config(job.image_size)
    model = Autoencoder(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=job.learning_rate, betas=(0.5, 0.9))
    state_path = job.run_dir / "autoencoder-state.pt"
    step, history, generator, clock = resume(state_path, job.seed, {"model": model, "optimizer": optimizer}, log)
    log(f"autoencoder: {parameter_count(model) / 1e6:.2f}M parameters, {cfg.n_embed} codes")

    usage = torch.zeros(cfg.n_embed)
    last_checkpoint = clock.this_run
    model.train()

    def checkpoint():
        save_state(state_path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                                "history": history, "generator": generator.get_state(), "elapsed": clock.elapsed})
        metrics = history[-1] if history else {}
        card = (f"VQ-f4 autoencoder trained by genart on {job.data.name}: {step} steps, "
                f"{clock.elapsed / 60:.1f} min, held-out PSNR {metrics.get('psnr', float('nan')):.2f} dB")
        save_bundle(job.out, autoencoder=model, model_card=card,
                    extra={"training": {"steps": step, "minutes": round(clock.elapsed / 60, 1), "history": history}})

    with training_progress(job.quiet) as progress:
        task = progress.add_task("autoencoder", total=job.max_steps, completed=step, status="")
        while step < job.max_steps:
            if not begin_step(job, step, clock, optimizer, log):
                break

            batch_idx = torch.randint(len(train_images), (job.batch_size,), generator=generator)
            x = to_model_range(train_images[batch_idx])
            flip = torch.rand(job.batch_size, generator=generator) < 0.5
            x[flip] = x[flip].flip(-1)

            with bf16_autocast(job.bf16):
                z = model.encode(x)
                z_q, indices, codebook_loss = model.quantize(z.float())
                recon = model.decoder(model.post_quant_conv(z_q))
            l1 = F.l1_loss(recon.float(), x)
            loss = l1 + codebook_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1

            usage += torch.bincount(indices.flatten(), minlength=cfg.n_embed).float()
            if step % job.restart_every == 0:
                restart_dead_codes(model, usage, z.detach().float(), generator)
                usage.zero_()

            if step % job.eval_every == 0 or step == job.max_steps:
                value = heldout_psnr(model, held_images)
                history.append({"step": step, "minutes": round(clock.elapsed / 60, 2), "psnr": round(value, 3),
                                "l1": round(l1.item(), 5)})
                log(f"step {step}: held-out PSNR {value:.2f} dB, train L1 {l1.item():.4f}, {clock.elapsed / 60:.1f} min")
            if clock.this_run - last_checkpoint > job.checkpoint_seconds:
                checkpoint()
                last_checkpoint = clock.this_run
            progress.update(task, completed=step, status=f"L1 {l1.item():.4f}")
    checkpoint()
    return history[-1] if history else {}


@torch.no_grad()
def restart_dead_codes(model: Autoencoder, usage: torch.Tensor, z: torch.Tensor, generator: torch.Generator) -> int:
    """Re-initialise codes unused since the last restart from random latent vectors of the batch."""
    dead = (usage == 0).nonzero().flatten()
    if len(dead) == 0:
        return 0
    vectors = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    picks = torch.randint(len(vectors), (len(dead),), generator=generator)
    noise = torch.randn(len(dead), z.shape[1], generator=generator) * 0.01 * vectors.std()
    model.quantize.embedding.weight.data[dead] = vectors[picks] + noise
    return len(dead)
