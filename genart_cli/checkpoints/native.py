"""genart's checkpoint format: safetensors whose metadata contains the model config as JSON.

Tensor names follow the released latent-diffusion checkpoints: the autoencoder under
`first_stage_model.` and the UNet under `model.diffusion_model.`. The metadata key `genart`
is a JSON object with `autoencoder`, `unet` (either may be absent), `schedule`, `scale_factor`,
`conditioning`, `model_card` and `autoencoder_sha256`, so one file is enough to run the model.
A feed-forward upscaler (RRDBNet or SRVGGNetCompact) sits under `upscaler.`, its config under the
metadata's `upscaler`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import ModelError
from ..models.autoencoder import Autoencoder, AutoencoderConfig
from ..models.esrgan import UpscalerConfig, build_upscaler
from ..models.unet import UNetConfig, UNetModel
from ..diffusion.schedule import ScheduleConfig
from ..runtime.atomic import atomic_path

AE_PREFIX = "first_stage_model."
UNET_PREFIX = "model.diffusion_model."
UPSCALER_PREFIX = "upscaler."
CLASS_EMBEDDER_PREFIX = "cond_stage_model.embedding."
METADATA_KEY = "genart"
FORMAT_VERSION = 1


@dataclass
class ModelBundle:
    """The models and settings of one checkpoint file. Models are on the CPU in fp32 after loading."""

    path: Path
    autoencoder: Autoencoder | None = None
    unet: UNetModel | None = None
    upscaler: torch.nn.Module | None = None  # RRDBNet or SRVGGNetCompact, pixels in [0, 1]
    # cin256's ClassEmbedder: class index -> (1, context_dim) context for cross-attention.
    class_embedder: torch.nn.Embedding | None = None
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    # The UNet runs on autoencoder latents multiplied by scale_factor.
    scale_factor: float = 1.0
    conditioning: str = "none"
    model_card: str = ""
    autoencoder_sha256: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name


def autoencoder_fingerprint(config: AutoencoderConfig, state_dict: dict[str, torch.Tensor]) -> str:
    """Return a SHA-256 over the autoencoder's config and weights (as fp32), to match latents to it.

    Hash the weights as stored: fp16 values widen to fp32 exactly, so a file saved in fp16 and
    saved again keeps its fingerprint.
    """
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(state_dict.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def stored_tensor(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Return the tensor as it is written: on the CPU, contiguous, floating point cast to `dtype`."""
    return tensor.detach().to("cpu", dtype if tensor.is_floating_point() else tensor.dtype).contiguous()


def save_bundle(path: str | Path, *, autoencoder: Autoencoder | None = None, unet: UNetModel | None = None,
                upscaler: torch.nn.Module | None = None, class_embedder: torch.nn.Embedding | None = None, schedule: ScheduleConfig | None = None, scale_factor: float = 1.0, conditioning: str = "none",
                model_card: str = "", extra: dict | None = None, dtype: torch.dtype = torch.float32) -> None:
    """Write the models and their config to one safetensors file, atomically."""
    tensors = {}
    config = {
        "format_version": FORMAT_VERSION,
        "schedule": (schedule or ScheduleConfig()).to_dict(),
        "scale_factor": float(scale_factor),
        "conditioning": conditioning,
        "model_card": model_card,
    }
    if autoencoder is not None:
        stored = {name: stored_tensor(tensor, dtype) for name, tensor in autoencoder.state_dict().items()}
        config["autoencoder"] = autoencoder.config.to_dict()
        config["autoencoder_sha256"] = autoencoder_fingerprint(autoencoder.config, stored)
        for name, tensor in stored.items():
            tensors[AE_PREFIX + name] = tensor
    if unet is not None:
        config["unet"] = unet.config.to_dict()
        for name, tensor in unet.state_dict().items():
            tensors[UNET_PREFIX + name] = stored_tensor(tensor, dtype)
    if class_embedder is not None:
        config["class_embedder"] = {"num_classes": class_embedder.num_embeddings, "embed_dim": class_embedder.embedding_dim}
        tensors[CLASS_EMBEDDER_PREFIX + "weight"] = stored_tensor(class_embedder.weight, dtype)
    if upscaler is not None:
        config["upscaler"] = upscaler.config.to_dict()
        for name, tensor in upscaler.state_dict().items():
            tensors[UPSCALER_PREFIX + name] = stored_tensor(tensor, dtype)
    if extra:
        config["extra"] = extra
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(config)})


def read_header(path: str | Path) -> tuple[dict, list[str]]:
    """Return (genart config, tensor names) without loading tensors; ModelError if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found; check the path")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            names = list(handle.keys())
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelError(f"{path}: not a readable safetensors file ({err}); the file may be truncated or "
                         "of another format: download or convert it again") from None
    if METADATA_KEY not in metadata:
        raise ModelError(f"{path}: safetensors file without genart config metadata; "
                         "write it with `genart train` or convert it to genart's format")
    try:
        config = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as err:
        raise ModelError(f"{path}: invalid genart config metadata ({err}); convert the checkpoint again") from None
    return config, names


def load_state_strict(label: str, module: torch.nn.Module, state: dict[str, torch.Tensor], prefix: str = "") -> None:
    """Copy `state` into `module`; report every missing, unexpected or misshaped tensor in one error.

    `prefix` is only for the names in the message, so they read as they are in the file.
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [f"{prefix}{name} {tuple(state[name].shape)} (expected {tuple(expected[name].shape)})"
                   for name in sorted(set(expected) & set(state))
                   if tuple(state[name].shape) != tuple(expected[name].shape)]
    problems = []
    for kind, items in (("missing", [prefix + n for n in missing]), ("unexpected", [prefix + n for n in unexpected]),
                        ("wrong shape", wrong_shape)):
        if items:
            shown = ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")
            problems.append(f"{len(items)} {kind}: {shown}")
    if problems:
        raise ModelError(f"{label}: tensors do not match the config ({'; '.join(problems)}); "
                         "the file is damaged or its config is wrong")
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def _read_prefixed(handle, names: set[str], prefix: str) -> dict[str, torch.Tensor]:
    return {n[len(prefix):]: handle.get_tensor(n) for n in names if n.startswith(prefix)}


def load_bundle(path: str | Path) -> ModelBundle:
    """Load a genart checkpoint strictly: any missing, unexpected or misshaped tensor is an error."""
    path = Path(path)
    config, names = read_header(path)
    name_set = set(names)
    try:
        schedule = ScheduleConfig.from_dict(config.get("schedule", {}))
        ae_config = AutoencoderConfig.from_dict(config["autoencoder"]) if "autoencoder" in config else None
        unet_config = UNetConfig.from_dict(config["unet"]) if "unet" in config else None
        upscaler_config = UpscalerConfig.from_dict(config["upscaler"]) if "upscaler" in config else None
        classes = config.get("class_embedder")
        if classes is not None:
            classes = (int(classes["num_classes"]), int(classes["embed_dim"]))
    except (TypeError, ValueError, KeyError) as err:
        raise ModelError(f"{path}: invalid model config ({err}); convert the checkpoint again") from None

    bundle = ModelBundle(
        path=path, schedule=schedule, scale_factor=float(config.get("scale_factor", 1.0)),
        conditioning=config.get("conditioning", "none"), model_card=config.get("model_card", ""),
        autoencoder_sha256=config.get("autoencoder_sha256", ""), extra=config.get("extra", {}),
    )
    with safe_open(str(path), framework="pt") as handle:
        if ae_config is not None:
            bundle.autoencoder = Autoencoder(ae_config)
            load_state_strict(str(path), bundle.autoencoder, _read_prefixed(handle, name_set, AE_PREFIX), AE_PREFIX)
            bundle.autoencoder.eval()
        if unet_config is not None:
            bundle.unet = UNetModel(unet_config)
            load_state_strict(str(path), bundle.unet, _read_prefixed(handle, name_set, UNET_PREFIX), UNET_PREFIX)
            bundle.unet.eval()
        if upscaler_config is not None:
            bundle.upscaler = build_upscaler(upscaler_config)
            load_state_strict(str(path), bundle.upscaler, _read_prefixed(handle, name_set, UPSCALER_PREFIX),
                              UPSCALER_PREFIX)
            bundle.upscaler.eval()
        if classes is not None:
            bundle.class_embedder = torch.nn.Embedding(*classes)
            load_state_strict(str(path), bundle.class_embedder, _read_prefixed(handle, name_set, CLASS_EMBEDDER_PREFIX),
                              CLASS_EMBEDDER_PREFIX)
    prefixes = (AE_PREFIX, UNET_PREFIX, UPSCALER_PREFIX, CLASS_EMBEDDER_PREFIX)
    stray = sorted(n for n in names if not n.startswith(prefixes))
    stray += sorted(n for n in names if n.startswith(AE_PREFIX) and ae_config is None)
    stray += sorted(n for n in names if n.startswith(UNET_PREFIX) and unet_config is None)
    stray += sorted(n for n in names if n.startswith(UPSCALER_PREFIX) and upscaler_config is None)
    stray += sorted(n for n in names if n.startswith(CLASS_EMBEDDER_PREFIX) and classes is None)
    if stray:
        raise ModelError(f"{path}: {len(stray)} tensors that no model in its config uses, such as {stray[0]}; "
                         "the file is damaged or its config is wrong")
    if bundle.autoencoder is not None and not bundle.autoencoder_sha256:
        bundle.autoencoder_sha256 = autoencoder_fingerprint(ae_config, bundle.autoencoder.state_dict())
    return bundle
