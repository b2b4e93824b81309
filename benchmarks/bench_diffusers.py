"""Time genart against diffusers on the same weights: UNet forwards, VQ decodes, a 50-step sample.

The models have the released sizes of latent-diffusion's bsr_sr and celebahq UNets and the vq-f4
autoencoder, with random weights (no checkpoint can be downloaded here). diffusers builds them and
saves them as folders; genart loads those folders through its own name mapping. Each measurement
runs in a fresh process, so its peak resident memory (VmHWM) is its own: one warm-up, then
`--repeats` timed runs. Both libraries run in fp32, then in bf16 autocast with channels_last;
the bf16 rows give each library's max abs error against its own fp32 output.

Run: python benchmarks/bench_diffusers.py --out docs/benchmarks-diffusers.md
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

WORK = Path("build/bench-diffusers")

# diffusers configs equal to latent-diffusion's released models (checkpoint-formats, sections 2.1 and 4).
UNETS = {
    "bsr_sr": dict(in_channels=6, out_channels=3, block_out_channels=(160, 320, 320, 640),
                   down_block_types=("DownBlock2D",) * 3 + ("AttnDownBlock2D",),
                   up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * 3),
    "celebahq": dict(in_channels=3, out_channels=3, block_out_channels=(224, 448, 672, 896),
                     down_block_types=("DownBlock2D",) + ("AttnDownBlock2D",) * 3,
                     up_block_types=("AttnUpBlock2D",) * 3 + ("UpBlock2D",)),
}
VQ_F4 = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
             up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(128, 256, 512), layers_per_block=2,
             latent_channels=3, num_vq_embeddings=8192, vq_embed_dim=3, norm_num_groups=32, scaling_factor=1.0)

# (task, model, size): size is the latent side for UNets and samples, the pixel side for decodes.
TASKS = [("unet", "bsr_sr", 64), ("unet", "bsr_sr", 128), ("unet", "celebahq", 64), ("unet", "celebahq", 128),
         ("decode", "vq-f4", 256), ("decode", "vq-f4", 512), ("sample", "celebahq", 64)]


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Random weights with the zero-initialised output layers made non-zero, so every layer counts."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.02)
    return model.eval()


def build_folders() -> None:
    """Save the random-weight models once as diffusers folders under WORK."""
    import diffusers

    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0195,
                                        beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                                        steps_offset=1)
    for name, config in UNETS.items():
        folder = WORK / name
        if (folder / "model_index.json").exists():
            continue
        torch.manual_seed(0)
        unet = perturbed(diffusers.UNet2DModel(sample_size=64, layers_per_block=2, attention_head_dim=32,
                                               norm_num_groups=32, **config))
        vqvae = perturbed(diffusers.VQModel(**VQ_F4))
        diffusers.LDMPipeline(vqvae=vqvae, unet=unet, scheduler=scheduler).save_pretrained(folder)


def peak_mib() -> float:
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


def rss_mib() -> float:
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def make_runner(library: str, precision: str, task: str, model: str, size: int):
    """Load the models and return a function that runs the task once and returns its output tensor."""
    bf16 = precision == "bf16"
    folder = WORK / ("celebahq" if model == "vq-f4" else model)
    inputs = torch.Generator().manual_seed(1)

    if library == "genart":
        from genart_cli.checkpoints.loader import load_model
        from genart_cli.diffusion.pipeline import SampleSettings, sample
        from genart_cli.latents import decode
        from genart_cli.runtime.device import resolve_runtime

        bundle, _ = load_model(folder)
        runtime = resolve_runtime("cpu", precision)
        if task == "unet":
            unet = runtime.prepare(bundle.unet)
            x = torch.randn(1, unet.config.in_channels, size, size, generator=inputs)
            t = torch.tensor([500])

            def run():
                with torch.no_grad(), runtime.autocast():
                    return unet(x, t).float()
        elif task == "decode":
            autoencoder = runtime.prepare(bundle.autoencoder)
            bundle.unet = None  # the decode needs only the autoencoder; diffusers loads no UNet here
            z = torch.randn(1, 3, size // 4, size // 4, generator=inputs)

            def run():
                return decode(autoencoder, z, runtime)
        else:
            def run(steps=50):
                settings = SampleSettings(steps=steps, eta=0.0, seed=0)
                return torch.stack([pixels for _, pixels in sample(bundle, runtime, settings)])
        return run

    import diffusers

    memory_format = torch.channels_last if bf16 else torch.contiguous_format
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    if task == "unet":
        unet = diffusers.UNet2DModel.from_pretrained(folder / "unet").eval().to(memory_format=memory_format)
        x = torch.randn(1, unet.config.in_channels, size, size, generator=inputs).to(memory_format=memory_format)

        def run():
            with torch.no_grad(), autocast:
                return unet(x, 500).sample.float()
    elif task == "decode":
        vqvae = diffusers.VQModel.from_pretrained(folder / "vqvae").eval().to(memory_format=memory_format)
        z = torch.randn(1, 3, size // 4, size // 4, generator=inputs).to(memory_format=memory_format)

        def run():
            with torch.no_grad(), autocast:
                return vqvae.decode(z).sample.float().clamp(-1, 1)
    else:
        pipeline = diffusers.LDMPipeline.from_pretrained(folder)
        pipeline.set_progress_bar_config(disable=True)
        pipeline.unet.to(memory_format=memory_format)
        pipeline.vqvae.to(memory_format=memory_format)
        # LDMPipeline turns the decoded tensor into numpy, which has no bfloat16: hand it fp32.
        vq_decode = pipeline.vqvae.decode

        def decode_to_fp32(*args, **kwargs):
            out = vq_decode(*args, **kwargs)
            out.sample = out.sample.float()
            return out

        pipeline.vqvae.decode = decode_to_fp32

        def run(steps=50):
            with autocast:
                images = pipeline(batch_size=1, generator=torch.Generator().manual_seed(0), num_inference_steps=steps,
                                  eta=0.0, output_type="np").images  # LDMPipeline returns numpy for "pt" too
            return torch.from_numpy(images).permute(0, 3, 1, 2).float() * 2 - 1  # [0, 1] -> [-1, 1], as genart
    return run


def child(library: str, precision: str, task: str, model: str, size: int, repeats: int, out: Path) -> dict:
    torch.manual_seed(0)
    run = make_runner(library, precision, task, model, size)
    gc.collect()
    loaded = rss_mib()
    # Reset VmHWM, so that the peak is the run's and not the loading's (Linux, clear_refs value 5).
    Path("/proc/self/clear_refs").write_text("5")
    run(steps=1) if task == "sample" else run()  # warm-up: one-time allocations and kernel choice
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        output = run()
        times.append(time.perf_counter() - start)
    torch.save(output, out)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "peak_mib": peak_mib(), "loaded_mib": loaded}


def paired(precision: str, task: str, model: str, size: int, repeats: int) -> dict:
    """Time both libraries in one process, alternating runs, so that both see the same machine state.

    Separate processes on this 2-core VM landed in a fast or a slow mode (about 25 % apart) from one
    start to the next, which swamped the differences being measured.
    """
    runs = {library: make_runner(library, precision, task, model, size) for library in ("genart", "diffusers")}
    for run in runs.values():
        run(steps=1) if task == "sample" else run()
    times = {library: [] for library in runs}
    for _ in range(repeats):
        for library, run in runs.items():
            start = time.perf_counter()
            run()
            times[library].append(time.perf_counter() - start)
    return {library: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t)}
            for library, t in times.items()}


def max_abs(a: Path, b: Path) -> float:
    return (torch.load(a) - torch.load(b)).abs().max().item()


def describe(task: str, model: str, size: int) -> str:
    if task == "unet":
        return f"UNet forward, {model}, {size}x{size} latent"
    if task == "decode":
        return f"VQ-f4 decode to {size}x{size} px"
    return f"{model} sample, 50 DDIM steps, {size}x{size} latent (256 px)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks-diffusers.md"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sample-repeats", type=int, default=2)
    parser.add_argument("--only", help="run only the tasks whose description contains this text")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse the results of cells measured before (kept in build/bench-diffusers)")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    parser.add_argument("--paired", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.paired:
        precision, task, model, size = args.paired
        repeats = args.sample_repeats if task == "sample" else args.repeats
        print(json.dumps(paired(precision, task, model, int(size), repeats)))
        return
    if args.child:
        library, precision, task, model, size, out = args.child
        repeats = args.sample_repeats if task == "sample" else args.repeats
        print(json.dumps(child(library, precision, task, model, int(size), repeats, Path(out))))
        return

    WORK.mkdir(parents=True, exist_ok=True)
    build_folders()
    rows = []
    for task, model, size in TASKS:
        if args.only and args.only not in describe(task, model, size):
            continue
        results = {}
        for precision in ("fp32", "bf16"):
            for library in ("genart", "diffusers"):
                out = WORK / f"{library}-{precision}-{task}-{model}-{size}.pt"
                cached = out.with_suffix(".json")
                if args.reuse and cached.exists() and out.exists():
                    result = json.loads(cached.read_text())
                else:
                    done = subprocess.run([sys.executable, __file__, "--repeats", str(args.repeats), "--sample-repeats",
                                           str(args.sample_repeats), "--child", library, precision, task, model,
                                           str(size), str(out)], capture_output=True, text=True)
                    if done.returncode != 0:
                        sys.exit(f"{library} {precision} {task} {model} {size} failed:\n{done.stderr[-3000:]}")
                    result = json.loads(done.stdout.strip().splitlines()[-1])
                    cached.write_text(json.dumps(result))
                result["out"] = out
                results[library, precision] = result
            cached = WORK / f"paired-{precision}-{task}-{model}-{size}.json"
            if args.reuse and cached.exists():
                timing = json.loads(cached.read_text())
            else:
                done = subprocess.run([sys.executable, __file__, "--repeats", str(args.repeats), "--sample-repeats",
                                       str(args.sample_repeats), "--paired", precision, task, model, str(size)],
                                      capture_output=True, text=True)
                if done.returncode != 0:
                    sys.exit(f"paired {precision} {task} {model} {size} failed:\n{done.stderr[-3000:]}")
                timing = json.loads(done.stdout.strip().splitlines()[-1])
                cached.write_text(json.dumps(timing))
            for library in ("genart", "diffusers"):
                results[library, precision].update(timing[library])
                print(describe(task, model, size), library, precision, f"{timing[library]['median_s']:.3f} s",
                      flush=True)
        fp32_diff = max_abs(results["genart", "fp32"]["out"], results["diffusers", "fp32"]["out"])
        for library in ("genart", "diffusers"):
            results[library, "bf16"]["error"] = max_abs(results[library, "bf16"]["out"],
                                                        results[library, "fp32"]["out"])
        rows.append((describe(task, model, size), results, fp32_diff))

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    import diffusers

    lines = [
        "# Benchmark against diffusers",
        "",
        f"Machine: {cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}, diffusers "
        f"{diffusers.__version__}, Python {platform.python_version()}.",
        "Command: `make bench` (`python benchmarks/bench_diffusers.py`). Random weights at the released "
        "sizes (bsr_sr UNet 113.6M parameters, celebahq UNet 274.1M, vq-f4 autoencoder), built in diffusers "
        "and loaded by genart from the same folders. Times: both libraries loaded in one process, one warm-up "
        f"each, then {args.repeats} alternating runs ({args.sample_repeats} for the sample); the median, with min "
        "and max in brackets. Separate processes on this VM started in a fast or a slow mode about 25 % apart, "
        "so they could not compare the libraries fairly. Memory and outputs: each library in its own process. "
        "Peak is the process's peak resident memory during the timed runs (reset after loading); \"over load\" "
        "is that peak less the memory held once the model was loaded.",
        "",
        "## fp32 (the exact path)",
        "",
        "| task | genart s | diffusers s | genart / diffusers | max abs diff genart vs diffusers | "
        "genart peak MiB (over load) | diffusers peak MiB (over load) |",
        "|---|---|---|---|---|---|---|",
    ]

    def cell(r: dict) -> str:
        return f"{r['median_s']:.3f} ({r['min_s']:.3f}-{r['max_s']:.3f})"

    def memory(r: dict) -> str:
        return f"{r['peak_mib']:.0f} ({r['peak_mib'] - r['loaded_mib']:.0f})"

    for name, results, fp32_diff in rows:
        g, d = results["genart", "fp32"], results["diffusers", "fp32"]
        lines.append(f"| {name} | {cell(g)} | {cell(d)} | {g['median_s'] / d['median_s']:.2f} | {fp32_diff:.1e} | "
                     f"{memory(g)} | {memory(d)} |")
    lines += [
        "",
        "## bf16 autocast with channels_last (the fast path)",
        "",
        "| task | genart s | diffusers s | genart / diffusers | genart speed-up over its fp32 | genart max abs error "
        "vs its fp32 | diffusers max abs error vs its fp32 | genart peak MiB (over load) | diffusers peak MiB (over load) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, results, _ in rows:
        g, d = results["genart", "bf16"], results["diffusers", "bf16"]
        speedup = results["genart", "fp32"]["median_s"] / g["median_s"]
        lines.append(f"| {name} | {cell(g)} | {cell(d)} | {g['median_s'] / d['median_s']:.2f} | {speedup:.2f}x | "
                     f"{g['error']:.2e} | {d['error']:.2e} | {memory(g)} | {memory(d)} |")
    lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
