"""Train a feed-forward x4 upscaler (SRVGGNetCompact) on photographs, with L1 loss.

Each step cuts random high-resolution crops from the training photos, flips and rotates them,
and makes the low-resolution inputs with MATLAB-style antialiased bicubic (imaging/resize.py),
rounded to 8 bits as a saved image would be. Held-out photos from another source are scored
as papers do: PSNR and SSIM on Y with a border of `scale` pixels cropped, against bicubic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..checkpoints.native import save_bundle
from ..errors import InputError
from ..imaging.metrics import psnr_y, ssim_y
from ..imaging.resize import imresize
from ..models.esrgan import UpscalerConfig, build_upscaler
from .data import IMAGE_SUFFIXES
from .loop import EMA, begin_step, bf16_autocast, resume, save_state, training_progress


@dataclass
class UpscalerTraining:
    data: list[Path]  # folders searched recursively for photos
    heldout: list[Path]  # held-out photos (files or folders), scored at every evaluation
    out: Path
    run_dir: Path
    scale: int = 4
    num_feat: int = 64
    num_block: int = 16
    max_steps: int = 12000
    batch_size: int = 16
    lr_patch: int = 48  # low-resolution crop side; the high-resolution crop is scale times larger
    learning_rate: float = 5e-4
    max_side: int = 2048  # photos are first shrunk so their longer side is at most this
    seed: int = 0
    bf16: bool = True
    max_minutes: float | None = None
    checkpoint_seconds: float = 120.0
    eval_every: int = 1000
    quiet: bool = False
    model_card: str = ""


def find_photos(roots: list[Path], min_side: int = 256) -> list[Path]:
    """Image files under the roots (recursively), sorted, skipping previews and tiny images."""
    found = []
    for root in roots:
        if root.is_file():
            found.append(root)
            continue
        if not root.is_dir():
            raise InputError(f"{root}: photo folder not found; see `make upscaler-data`")
        found += [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and "screenshot" not in p.name]
    photos = []
    for path in sorted(set(found)):
        with Image.open(path) as image:
            if min(image.size) >= min_side:
                photos.append(path)
    if not photos:
        raise InputError(f"no photos of at least {min_side} px in {', '.join(map(str, roots))}")
    return photos


def load_photo(path: Path, max_side: int) -> torch.Tensor:
    """(3, H, W) uint8 RGB, shrunk by an integer box filter so the longer side is at most max_side."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        factor = -(-max(image.size) // max_side)
        if factor > 1:
            image = image.reduce(factor)
        return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def make_lowres(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """(B, 3, H, W) float in [0, 1] -> (B, 3, H / scale, W / scale), bicubic, rounded to 8 bits."""
    lr = imresize(hr, scale=1 / scale)
    return (lr.clamp(0, 1) * 255).round() / 255


def random_crops(photos: list[torch.Tensor], count: int, side: int, generator: torch.Generator) -> torch.Tensor:
    """(count, 3, side, side) float crops in [0, 1] with random flips and 90-degree rotations."""
    crops = []
    for _ in range(count):
        photo = photos[int(torch.randint(len(photos), (1,), generator=generator))]
        _, h, w = photo.shape
        top = int(torch.randint(h - side + 1, (1,), generator=generator))
        left = int(torch.randint(w - side + 1, (1,), generator=generator))
        crop = photo[:, top:top + side, left:left + side]
        flips = torch.randint(2, (2,), generator=generator)
        if flips[0]:
            crop = crop.flip(-1)
        crop = torch.rot90(crop, int(flips[1]), dims=(1, 2))
        crops.append(crop)
    return torch.stack(crops).float() / 255


@torch.no_grad()
def upscale_uint8(model: torch.nn.Module, lr: torch.Tensor) -> torch.Tensor:
    """(3, h, w) uint8 -> (3, s h, s w) uint8 with the model in fp32."""
    out = model(lr[None].float() / 255)[0]
    return (out.clamp(0, 1) * 255).round().to(torch.uint8)


@torch.no_grad()
def evaluate(model: torch.nn.Module, heldout: list[torch.Tensor], scale: int) -> dict:
    """Mean PSNR/SSIM (Y, border `scale`) of the model and of bicubic over held-out photos."""
    was_training = model.training
    model.eval()
    scores = {"psnr": [], "ssim": [], "bicubic_psnr": [], "bicubic_ssim": []}
    for photo in heldout:
        _, h, w = photo.shape
        hr = photo[:, : h - h % scale, : w - w % scale]
        lr = (make_lowres(hr[None].float() / 255, scale)[0] * 255).round().to(torch.uint8)
        bicubic = (imresize(lr[None].float() / 255, scale=scale)[0].clamp(0, 1) * 255).round().to(torch.uint8)
        sr = upscale_uint8(model, lr)
        scores["psnr"].append(psnr_y(sr, hr, scale))
        scores["ssim"].append(ssim_y(sr, hr, scale))
        scores["bicubic_psnr"].append(psnr_y(bicubic, hr, scale))
        scores["bicubic_ssim"].append(ssim_y(bicubic, hr, scale))
    model.train(was_training)
    return {key: round(float(np.mean(values)), 4) for key, values in scores.items()}


def initialise(model: torch.nn.Module) -> None:
    """He initialisation for the convs (PReLU slope 0.25), and a near-zero last conv.

    PyTorch's default conv init shrinks the signal layer by layer: through 16 convs the gradient
    reaching the first layer was about 1e-8, and the network settled on adding nothing to its
    nearest-neighbour input. With He init it beat bicubic within 400 steps.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, a=0.25, nonlinearity="leaky_relu")
            torch.nn.init.zeros_(module.bias)
    torch.nn.init.normal_(model.body[-1].weight, std=1e-3)


def train_upscaler(job: UpscalerTraining, log=print) -> dict:
    torch.manual_seed(job.seed)
    train_paths = find_photos(job.data)
    heldout_paths = find_photos(job.heldout, min_side=64)
    photos = [load_photo(p, job.max_side) for p in train_paths]
    heldout = [load_photo(p, job.max_side) for p in heldout_paths]
    hr_side = job.lr_patch * job.scale
    photos = [p for p in photos if min(p.shape[1:]) >= hr_side]
    log(f"data: {len(photos)} training photos, {len(heldout)} held-out photos")

    config = UpscalerConfig(arch="srvgg", scale=job.scale, num_feat=job.num_feat, num_block=job.num_block)
    # channels_last: bf16 convolutions on the CPU run about twice as fast in NHWC.
    model = build_upscaler(config)
    initialise(model)
    model = model.to(memory_format=torch.channels_last)
    ema = EMA(model, max_decay=0.999)
    optimizer = torch.optim.AdamW(model.parameters(), lr=job.learning_rate, weight_decay=0.0)
    state_path = job.run_dir / "upscaler-state.pt"
    step, history, generator, clock = resume(state_path, job.seed,
                                             {"model": model, "ema": ema, "optimizer": optimizer}, log)
    parameters = sum(p.numel() for p in model.parameters())
    log(f"upscaler: SRVGGNetCompact x{job.scale}, {job.num_feat} features, {job.num_block} convs, "
        f"{parameters / 1e6:.3f}M parameters")
    model.train()
    last_save = clock.this_run

    def checkpoint(final: bool = False):
        save_state(state_path, {"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                                "step": step, "history": history, "generator": generator.get_state(),
                                "elapsed": clock.elapsed})
        chosen, metrics = ema.model, history[-1] if history else {}
        if final and history:
            # Ship whichever copy scores better on the held-out photos.
            raw = evaluate(model, heldout, job.scale)
            chosen = ema.model if metrics.get("psnr", 0) >= raw["psnr"] else model
            metrics = {**metrics, "raw_psnr": raw["psnr"], "shipped": "ema" if chosen is ema.model else "raw"}
            history[-1] = metrics
        card = job.model_card or f"SRVGGNetCompact x{job.scale} trained by genart"
        save_bundle(job.out, upscaler=chosen, model_card=card,
                    extra={"training": {"steps": step, "minutes": round(clock.elapsed / 60, 1), "history": history,
                                        "training_photos": [p.name for p in train_paths],
                                        "heldout": [p.name for p in heldout_paths]}})

    with training_progress(job.quiet) as progress:
        task = progress.add_task("upscaler", total=job.max_steps, completed=step, status="")
        while step < job.max_steps:
            if not begin_step(job, step, clock, optimizer, log):
                break

            hr = random_crops(photos, job.batch_size, hr_side, generator)
            lr = make_lowres(hr, job.scale)
            with bf16_autocast(job.bf16):
                sr = model(lr.contiguous(memory_format=torch.channels_last))
            loss = F.l1_loss(sr.float(), hr)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            ema.update(model)
            step += 1

            if step % job.eval_every == 0 or step == job.max_steps:
                metrics = evaluate(ema.model, heldout, job.scale)
                history.append({"step": step, "minutes": round(clock.elapsed / 60, 2), "l1": round(loss.item(), 5),
                                **metrics})
                log(f"step {step}: held-out PSNR-Y {metrics['psnr']:.2f} dB (bicubic {metrics['bicubic_psnr']:.2f}), "
                    f"SSIM {metrics['ssim']:.4f} (bicubic {metrics['bicubic_ssim']:.4f}), {clock.elapsed / 60:.1f} min")
                checkpoint()
                last_save = clock.this_run
            elif clock.this_run - last_save > job.checkpoint_seconds:
                checkpoint()
                last_save = clock.this_run
            progress.update(task, completed=step, status=f"L1 {loss.item():.4f}")
    checkpoint(final=step >= job.max_steps)
    return history[-1] if history else {}
