"""Time genart's upscalers: latent-diffusion 4x against diffusers, feed-forward speed and memory by size.

Part 1 runs a bsr_sr-sized model (random weights: UNet 113.6M parameters with the 6-channel
concat input, vq-f4 autoencoder), built in diffusers, through diffusers'
LDMSuperResolutionPipeline and through genart on the same folder, input and noise. Part 2 runs
the bundled x4 upscaler and a full-size RRDBNet x4 (random weights, Real-ESRGAN x4plus size)
on growing images with --tile auto, to show that memory stays bounded by the tile.
Each cell runs in a fresh process; peak memory is VmHWM, reset after the model is loaded.

Run: python benchmarks/bench_upscale.py --out docs/benchmarks-upscale.md
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

WORK = Path("build/bench-upscale")
LDM_SIZES = (64, 128)  # low-resolution input sides; the latent has the same size
LDM_STEPS = 10
FEEDFORWARD = {"default": (128, 256, 512, 1024), "rrdbnet-x4plus": (64, 128, 256)}


def build_sr_folder() -> Path:
    folder = WORK / "bsr_sr"
    if (folder / "model_index.json").exists():
        return folder
    import diffusers
    from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion_superresolution import (
        LDMSuperResolutionPipeline,
    )

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=64, in_channels=6, out_channels=3, layers_per_block=2,
                                 block_out_channels=(160, 320, 320, 640), attention_head_dim=32, norm_num_groups=32,
                                 down_block_types=("DownBlock2D",) * 3 + ("AttnDownBlock2D",),
                                 up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * 3)
    vqvae = diffusers.VQModel(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                              up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(128, 256, 512),
                              layers_per_block=2, latent_channels=3, num_vq_embeddings=8192, vq_embed_dim=3)
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0155,
                                        beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                                        steps_offset=1)
    LDMSuperResolutionPipeline(vqvae=vqvae.eval(), unet=unet.eval(), scheduler=scheduler).save_pretrained(folder)
    return folder


def memory(key: str) -> float:
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith(key)) / 1024


def reset_peak() -> float:
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    return memory("VmRSS")


def ldm_cell(library: str, size: int, repeats: int, out: Path) -> dict:
    lowres = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    folder = WORK / "bsr_sr"
    if library == "genart":
        from genart_cli.checkpoints.loader import load_model
        from genart_cli.diffusion.pipeline import SampleSettings
        from genart_cli.runtime.device import resolve_runtime
        from genart_cli.upscaling import Tiling, upscale_latent_diffusion

        bundle, _ = load_model(folder)
        runtime = resolve_runtime("cpu", "fp32")

        def run(steps):
            rgb = (lowres + 1) / 2
            return upscale_latent_diffusion(bundle, rgb, runtime, SampleSettings(steps=steps, eta=0.0, seed=0),
                                            Tiling(tile=10**9))
    else:
        from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion_superresolution import (
            LDMSuperResolutionPipeline,
        )

        pipeline = LDMSuperResolutionPipeline.from_pretrained(folder)
        pipeline.set_progress_bar_config(disable=True)

        def run(steps):
            with torch.no_grad():
                return pipeline(image=lowres, num_inference_steps=steps, eta=0.0,
                                generator=torch.Generator().manual_seed(0), output_type="pt").images
    loaded = reset_peak()
    run(1)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run(LDM_STEPS)
        times.append((time.perf_counter() - start) / LDM_STEPS)
    torch.save(result, out)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "peak_mib": memory("VmHWM"), "loaded_mib": loaded}


def feedforward_cell(model: str, size: int, repeats: int) -> dict:
    from genart_cli.checkpoints.loader import load_model
    from genart_cli.checkpoints.native import ModelBundle
    from genart_cli.cli.common import default_upscaler
    from genart_cli.models.esrgan import UpscalerConfig, build_upscaler
    from genart_cli.runtime.device import resolve_runtime
    from genart_cli.upscaling import AUTO_TILE, Tiling, upscale_feedforward

    if model == "default":
        bundle, _ = load_model(default_upscaler())
    else:
        bundle = ModelBundle(path=Path(model), upscaler=build_upscaler(UpscalerConfig(arch="rrdbnet", scale=4)).eval())
    runtime = resolve_runtime("cpu", "fp32")
    tiling = Tiling(tile=AUTO_TILE[bundle.upscaler.config.arch])
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    loaded = reset_peak()
    upscale_feedforward(bundle, image[..., :32, :32], runtime, tiling)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        upscale_feedforward(bundle, image, runtime, tiling)
        times.append(time.perf_counter() - start)
    scale = bundle.upscaler.config.scale
    megapixels = (size * scale) ** 2 / 1e6
    return {"median_s": statistics.median(times), "mp_per_s": megapixels / statistics.median(times),
            "peak_mib": memory("VmHWM"), "loaded_mib": loaded, "tile": tiling.tile, "out_side": size * scale}


def spawn(args: list[str]) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks-upscale.md"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "ldm":
            result = ldm_cell(rest[0], int(rest[1]), args.repeats, Path(rest[2]))
        else:
            result = feedforward_cell(rest[0], int(rest[1]), args.repeats)
        print(json.dumps(result))
        return

    WORK.mkdir(parents=True, exist_ok=True)
    build_sr_folder()
    ldm_rows = []
    for size in LDM_SIZES:
        results = {}
        for library in ("genart", "diffusers"):
            out = WORK / f"{library}-{size}.pt"
            results[library] = spawn(["--repeats", str(args.repeats), "--child", "ldm", library, str(size), str(out)])
            print("ldm", size, library, results[library], flush=True)
        diff = (torch.load(WORK / f"genart-{size}.pt") - torch.load(WORK / f"diffusers-{size}.pt")).abs().max().item()
        ldm_rows.append((size, results, diff))
    ff_rows = []
    for model, sizes in FEEDFORWARD.items():
        for size in sizes:
            repeats = str(args.repeats if size <= 512 else 1)
            result = spawn(["--repeats", repeats, "--child", "ff", model, str(size)])
            print("feed-forward", model, size, result, flush=True)
            ff_rows.append((model, size, result))

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    import diffusers

    lines = [
        "# Upscaling benchmarks",
        "",
        f"Machine: {cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}, diffusers "
        f"{diffusers.__version__}, Python {platform.python_version()}.",
        "Command: `make bench` (`python benchmarks/bench_upscale.py`). Each cell runs in its own process; peak "
        "memory is the process's VmHWM during the timed runs, reset after loading; \"over load\" subtracts the "
        "memory held once the model was loaded. fp32 on the CPU throughout.",
        "",
        "## Latent-diffusion 4x (bsr_sr size, random weights) against LDMSuperResolutionPipeline",
        "",
        f"Time per DDIM step: a {LDM_STEPS}-step run (eta 0, decode included) divided by {LDM_STEPS}, median of "
        f"{args.repeats} runs after a 1-step warm-up.",
        "",
        "| input (= latent) | output | genart s/step | diffusers s/step | genart / diffusers | max abs diff "
        "(0-1 pixels) | genart peak MiB (over load) | diffusers peak MiB (over load) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size, results, diff in ldm_rows:
        g, d = results["genart"], results["diffusers"]
        lines.append(f"| {size}x{size} | {size * 4}x{size * 4} | {g['median_s']:.3f} | {d['median_s']:.3f} | "
                     f"{g['median_s'] / d['median_s']:.2f} | {diff:.1e} | {g['peak_mib']:.0f} "
                     f"({g['peak_mib'] - g['loaded_mib']:.0f}) | {d['peak_mib']:.0f} ({d['peak_mib'] - d['loaded_mib']:.0f}) |")
    lines += [
        "",
        "## Feed-forward x4, --tile auto",
        "",
        "`default` is weights/upscaler-x4.safetensors (SRVGGNetCompact, 0.62M parameters); `rrdbnet-x4plus` "
        "is RRDBNet at Real-ESRGAN x4plus size (16.7M parameters) with random weights. Tiles get the default "
        "context, the receptive radius up to 32 pixels: exact for SRVGGNetCompact (radius 18), not for RRDBNet "
        "(radius 350). Peak memory still grows with the image, because the whole input and output are held as "
        "float32 tensors (16 bytes per output pixel); the activations stay bounded by the tile.",
        "",
        "| model | input | output | tile | seconds | output MP/s | peak MiB (over load) |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, size, r in ff_rows:
        lines.append(f"| {model} | {size}x{size} | {r['out_side']}x{r['out_side']} | {r['tile']} | "
                     f"{r['median_s']:.2f} | {r['mp_per_s']:.3f} | {r['peak_mib']:.0f} ({r['peak_mib'] - r['loaded_mib']:.0f}) |")
    lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
