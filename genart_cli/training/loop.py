"""Pieces shared by the training loops: resumable state, learning-rate schedule, EMA, progress."""

from __future__ import annotations

import contextlib
import copy
import math
import time
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..runtime.atomic import atomic_path


def lr_at(step: int, max_steps: int, base_lr: float, warmup: int = 200, final_fraction: float = 0.1) -> float:
    """Linear warm-up, then cosine decay from base_lr to final_fraction * base_lr at max_steps."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    return base_lr * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


class EMA:
    """Exponential moving average of a model's weights with a warm-up.

    The decay at update n is min(max_decay, (1 + n) / (10 + n)), so early averages follow the raw
    weights instead of keeping the random initialisation.
    """

    def __init__(self, model: torch.nn.Module, max_decay: float = 0.999):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.max_decay = max_decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        decay = min(self.max_decay, (1 + self.updates) / (10 + self.updates))
        for ema_param, param in zip(self.model.parameters(), model.parameters()):
            ema_param.lerp_(param.detach(), 1 - decay)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = state["updates"]


def save_state(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path) -> dict | None:
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def begin_step(job, step: int, clock: "Stopwatch", optimizer: torch.optim.Optimizer, log) -> bool:
    """Set the learning rate for `step`; return False once this run has used job.max_minutes.

    `job` is any training dataclass with max_steps, learning_rate and max_minutes.
    """
    if job.max_minutes is not None and clock.this_run > job.max_minutes * 60:
        log(f"stopping after {job.max_minutes} minutes at step {step}; run again to resume")
        return False
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, job.max_steps, job.learning_rate)
    return True


def bf16_autocast(enabled: bool):
    """bf16 autocast on the CPU, or a no-op context when training in fp32."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def resume(state_path: Path, seed: int, parts: dict, log) -> tuple[int, list, torch.Generator, "Stopwatch"]:
    """Restore `parts` (state-dict key -> object with load_state_dict) from a saved training state.

    Returns (step, history, data generator, stopwatch); a missing state gives a fresh start.
    """
    generator = torch.Generator().manual_seed(seed)
    state = load_state(state_path)
    if state is None:
        return 0, [], generator, Stopwatch()
    for key, part in parts.items():
        part.load_state_dict(state[key])
    generator.set_state(state["generator"])
    log(f"resuming from {state_path} at step {state['step']}")
    return state["step"], state["history"], generator, Stopwatch(state["elapsed"])


def training_progress(quiet: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), disable=quiet,
    )


class Stopwatch:
    """Training time summed across resumed runs, in seconds."""

    def __init__(self, elapsed: float = 0.0):
        self.base = elapsed
        self.start = time.monotonic()

    @property
    def elapsed(self) -> float:
        return self.base + time.monotonic() - self.start

    @property
    def this_run(self) -> float:
        return time.monotonic() - self.start
