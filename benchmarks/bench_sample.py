"""Time `genart sample` on the default weights: fp32 against bf16 autocast, batch 1 and 16.

Each configuration runs in its own process so that peak resident memory (VmHWM) belongs to it
alone. Every timing is the median of several runs after one warm-up run. The bf16 rows also give
the max abs pixel difference (0-255) against the fp32 images of the same seeds.

Run: python benchmarks/bench_sample.py --out docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

CONFIGS = [("fp32", 1), ("bf16", 1), ("fp32", 16), ("bf16", 16)]


def run_one(precision: str, batch: int, steps: int, repeats: int, out: Path) -> dict:
    """Sample `batch` images `repeats` times in this process; save the last images for comparison."""
    from genart_cli.checkpoints.native import load_bundle
    from genart_cli.cli.common import default_model
    from genart_cli.diffusion.pipeline import SampleSettings, sample
    from genart_cli.runtime.device import resolve_runtime

    bundle = load_bundle(default_model())
    runtime = resolve_runtime("cpu", precision)
    settings = SampleSettings(steps=steps, seed=0, num_images=batch, batch_size=batch)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        images = torch.stack([pixels for _, pixels in sample(bundle, runtime, settings)])
        if i > 0:
            times.append(time.perf_counter() - start)
    torch.save(images, out)
    peak_kib = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                    if line.startswith("VmHWM"))
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "peak_mib": peak_kib / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=3, metavar=("PRECISION", "BATCH", "TENSOR_FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        precision, batch, tensor_file = args.child
        print(json.dumps(run_one(precision, int(batch), args.steps, args.repeats, Path(tensor_file))))
        return

    work = Path("build/bench")
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for precision, batch in CONFIGS:
        tensor_file = work / f"{precision}-{batch}.pt"
        done = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--repeats", str(args.repeats),
                               "--child", precision, str(batch), str(tensor_file)],
                              check=True, capture_output=True, text=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if precision == "bf16":
            reference = torch.load(work / f"fp32-{batch}.pt")
            diff = ((torch.load(tensor_file) - reference).abs().max() * 127.5).item()
            result["max_pixel_diff"] = f"{diff:.1f}"
        rows.append((precision, batch, result))
        print(precision, batch, result, flush=True)

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    lines = [
        "# Benchmarks",
        "",
        f"Machine: {cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}, Python {platform.python_version()}.",
        f"Command: `make bench` (`python benchmarks/bench_sample.py`), {args.steps} DDIM steps on the default "
        f"weights, median of {args.repeats} runs after one warm-up, each configuration in its own process.",
        "",
        "## Sampling, default emoji model (64x64 pixels, 16x16x3 latents)",
        "",
        "| precision | images | median s | min s | max s | s per image | peak RSS MiB | max pixel diff vs fp32 (0-255) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for precision, batch, r in rows:
        lines.append(f"| {precision} | {batch} | {r['median_s']:.2f} | {r['min_s']:.2f} | {r['max_s']:.2f} | "
                     f"{r['median_s'] / batch:.3f} | {r['peak_mib']:.0f} | {r.get('max_pixel_diff', '-')} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
