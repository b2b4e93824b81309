"""Load any supported checkpoint: genart's own files, the original latent-diffusion and taming
layouts as safetensors, and diffusers folders. The layout is recognised from the content.

Pickled checkpoints (.ckpt, .pth, .bin) are read only by `genart convert`, through
`torch.load(weights_only=True)`, which unpickles tensors and plain containers and nothing else.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from ..diffusion.schedule import ScheduleConfig
from ..errors import ModelError
from ..models.autoencoder import Autoencoder
from ..models.esrgan import build_upscaler
from ..models.unet import UNetModel
from . import diffusers_layout, esrgan_layout, ldm_layout
from .infer import infer_autoencoder_config, infer_unet_config
from .native import METADATA_KEY, ModelBundle, autoencoder_fingerprint, load_bundle, load_state_strict

WEIGHT_CHOICES = ("ema", "raw")


@dataclass
class LoadReport:
    """Record of how a checkpoint was read, for `genart inspect` and for logs."""

    layout: str
    read: list[str] = field(default_factory=list)  # settings read from the file or its config
    inferred: list[str] = field(default_factory=list)  # settings derived from tensor names and shapes
    defaulted: list[str] = field(default_factory=list)  # settings filled with documented defaults
    weights: str = "single"  # "ema", "raw" or "single" (the file has one copy)
    ema_available: bool = False
    notes: list[str] = field(default_factory=list)
    dtype: str = ""


def sniff_format(path: Path) -> str:
    """Return 'safetensors', 'pickle' or 'unknown' from the first bytes of a file."""
    with path.open("rb") as handle:
        head = handle.read(16)
    if len(head) >= 8:
        header_size = int.from_bytes(head[:8], "little")
        if 2 <= header_size < 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    if zipfile.is_zipfile(path) or head[:1] == b"\x80":
        return "pickle"
    return "unknown"


def read_pickle_state(path: Path) -> dict[str, torch.Tensor]:
    """Read a pickled checkpoint with torch.load(weights_only=True) and return its flat tensor dict.

    weights_only unpickles tensors, numbers, strings and plain containers only, so no code from the
    file runs. A Lightning checkpoint's weights are under `state_dict`, Real-ESRGAN's under
    `params_ema` or `params`.
    """
    import pickle

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError) as err:
        # torch's message is long and suggests loading with code execution; keep only the culprit.
        globals_named = re.findall(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        reason = f"it references {globals_named[0]}" if globals_named else type(err).__name__
        raise ModelError(f"{path}: the pickle needs more than tensors and plain containers to load ({reason}); "
                         "genart never runs code from a checkpoint: find a safetensors release of it") from None
    if isinstance(checkpoint, dict):
        basicsr = {key: checkpoint[key] for key in esrgan_layout.WEIGHT_KEYS if isinstance(checkpoint.get(key), dict)}
        if basicsr:
            # Keep both copies as name prefixes, so --weights can choose between them later.
            checkpoint = {f"{key}.{name}": value for key, level in basicsr.items() for name, value in level.items()}
        elif isinstance(checkpoint.get("state_dict"), dict):
            checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict):
        raise ModelError(f"{path}: the pickle contains a {type(checkpoint).__name__}, not a dict of tensors")
    tensors = {name: value for name, value in checkpoint.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise ModelError(f"{path}: the pickle has no tensors")
    return tensors


def load_model(path: str | Path, config_path: str | Path | None = None, weights: str = "ema") -> tuple[ModelBundle, LoadReport]:
    """Load a checkpoint of any supported layout into a ModelBundle, strictly."""
    path = Path(path)
    settings = read_yaml_settings(Path(config_path), str(path)) if config_path else ldm_layout.LdmSettings()
    if path.is_dir():
        return load_diffusers_folder(path, weights)

    if not path.is_file():
        raise ModelError(f"{path}: model file or folder not found; check the path")
    file_format = sniff_format(path)
    if file_format == "pickle":
        raise ModelError(f"{path}: a PyTorch pickle checkpoint; convert it once with "
                         f"`genart convert {path} --out MODEL.safetensors` and use that file")
    if file_format != "safetensors":
        raise ModelError(f"{path}: not a safetensors file, a PyTorch pickle or a diffusers folder; the file may "
                         "be truncated or of another format")

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelError(f"{path}: not a readable safetensors file ({err}); the file may be truncated: "
                         "download or convert it again") from None
    if METADATA_KEY in metadata:
        bundle = load_bundle(path)
        report = LoadReport(layout="genart", read=["all settings (genart metadata)"], dtype=stored_dtype(path))
        if "converted_from" in bundle.extra:
            # A converted file keeps the record of how its source was read.
            report.read = bundle.extra.get("read", [])
            report.inferred = bundle.extra.get("inferred", [])
            report.defaulted = bundle.extra.get("defaulted", [])
            report.notes.append(f"converted by genart from {bundle.extra['converted_from']} "
                                f"({bundle.extra.get('layout', 'unknown')} layout)")
        return bundle, report
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelError(f"{path}: the tensors could not be read ({err}); the file may be truncated") from None
    bundle, report = from_state_dict(state, path, settings, weights)
    report.dtype = describe_dtypes(state.values())
    return bundle, report


def read_yaml_settings(config_path: Path, label: str) -> ldm_layout.LdmSettings:
    import yaml

    if not config_path.is_file():
        raise ModelError(f"{config_path}: config file not found; pass the yaml that came with {label} to --config")
    try:
        document = yaml.safe_load(config_path.read_text())
    except yaml.YAMLError as err:
        raise ModelError(f"{config_path}: invalid yaml ({err})") from None
    if not isinstance(document, dict):
        raise ModelError(f"{config_path}: not a latent-diffusion or taming config (no mapping at the top)")
    try:
        return ldm_layout.settings_from_yaml(document, str(config_path))
    except (KeyError, TypeError, ValueError) as err:
        raise ModelError(f"{config_path}: incomplete model config ({err})") from None


def stored_dtype(path: Path) -> str:
    with safe_open(str(path), framework="pt") as handle:
        names = list(handle.keys())
        return describe_dtypes(handle.get_slice(n).get_dtype() for n in names[:50])


SAFETENSORS_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64", "I64": "int64",
                      "I32": "int32"}


def describe_dtypes(values) -> str:
    """Name the dtypes of tensors, or of safetensors dtype strings, in torch's spelling."""
    names = set()
    for value in values:
        name = str(getattr(value, "dtype", value))
        names.add(SAFETENSORS_DTYPES.get(name, name.replace("torch.", "")))
    return ", ".join(sorted(names))


def strip_state_dict_level(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state and all(name.startswith("state_dict.") for name in state):
        return {name[len("state_dict."):]: tensor for name, tensor in state.items()}
    return state


def from_state_dict(state: dict[str, torch.Tensor], path: Path, settings: ldm_layout.LdmSettings,
                    weights: str = "ema") -> tuple[ModelBundle, LoadReport]:
    """Build models from a flat state dict in the original latent-diffusion or taming layout."""
    label = str(path)
    if weights not in WEIGHT_CHOICES:
        raise ModelError(f"--weights {weights!r}: choose one of {', '.join(WEIGHT_CHOICES)}")
    state = strip_state_dict_level(state)
    names = set(state)
    has_unet = any(n.startswith(ldm_layout.UNET) for n in names)
    has_first_stage = any(n.startswith(ldm_layout.FIRST_STAGE + "encoder.") for n in names)
    if has_unet or has_first_stage:
        return load_ldm_bundle(state, path, settings, weights)
    if "encoder.conv_in.weight" in names:
        return load_standalone_autoencoder(state, path, settings)
    if "input_blocks.0.0.weight" in names:
        raise ModelError(f"{label}: a bare UNet without its autoencoder; genart needs both in one file, under "
                         "model.diffusion_model. and first_stage_model.")
    if any(n.startswith(("down_blocks.", "encoder.down_blocks.")) for n in names):
        raise ModelError(f"{label}: a single diffusers model file; pass the whole diffusers folder "
                         "(with model_index.json and the config.json files) instead")
    if esrgan_layout.is_esrgan_state(names):
        return load_esrgan(state, path, weights)
    sample = sorted(names)[:3]
    raise ModelError(f"{label}: unrecognised tensor layout (first names: {', '.join(sample)}); "
                     "expected a latent-diffusion, taming or genart checkpoint")


def load_esrgan(state, path: Path, weights: str) -> tuple[ModelBundle, LoadReport]:
    """Load an RRDBNet or SRVGGNetCompact in Real-ESRGAN's (or the old ESRGAN) layout."""
    label = str(path)
    report = LoadReport(layout="esrgan")
    state, report.weights = esrgan_layout.select_weights(state, weights)
    report.ema_available = report.weights == "ema"
    state, renamed = esrgan_layout.rename_old_esrgan(state)
    if renamed:
        report.layout = "esrgan-original"
        report.notes.append("old ESRGAN tensor names (RRDB_trunk, trunk_conv, ...) mapped to BasicSR's")
    config = esrgan_layout.infer_upscaler_config(state, label)
    report.inferred.append("upscaler architecture and scale")
    if config.arch == "srvgg" and config.act_type != "prelu":
        report.defaulted.append("activation LeakyReLU(0.1) (no PReLU weights; ReLU is possible too)")
    upscaler = build_upscaler(config)
    load_state_strict(label, upscaler, state)
    bundle = ModelBundle(path=path, upscaler=upscaler.eval(),
                         model_card=f"{config.arch} x{config.scale} upscaler from {path.name}")
    return bundle, report


def load_standalone_autoencoder(state, path: Path, settings) -> tuple[ModelBundle, LoadReport]:
    label = str(path)
    report = LoadReport(layout="ldm-autoencoder")
    ae_state = {n: t for n, t in state.items() if n.startswith(ldm_layout.AE_TOP_LEVEL)}
    ignored = len(state) - len(ae_state)
    if ignored:
        report.notes.append(f"ignored {ignored} training-only tensors (loss.* and similar)")
    autoencoder = build_autoencoder(ae_state, label, settings, report, prefix="")
    bundle = ModelBundle(path=path, autoencoder=autoencoder, model_card=f"autoencoder from {path.name}",
                         autoencoder_sha256=autoencoder_fingerprint(autoencoder.config, autoencoder.state_dict()))
    return bundle, report


def build_model(part: str, model_class, given_config, infer, state, label: str, report: LoadReport, prefix: str):
    """Build `model_class` from the yaml's config if given, else from tensor shapes, and load it strictly.

    `part` names the model in the report ("autoencoder", "UNet"); `infer` is the matching infer_*_config.
    """
    if given_config is not None:
        config = given_config
        report.read.append(f"{part} architecture (config)")
    else:
        config, defaulted = infer(state, label)
        report.inferred.append(f"{part} architecture")
        report.defaulted.extend(f"{part} {name}" for name in defaulted)
    model = model_class(config)
    load_state_strict(label, model, state, prefix)
    return model.eval()


def build_autoencoder(ae_state, label, settings, report: LoadReport, prefix: str) -> Autoencoder:
    return build_model("autoencoder", Autoencoder, settings.autoencoder, infer_autoencoder_config, ae_state, label,
                       report, prefix)


def load_ldm_bundle(state, path: Path, settings, weights: str) -> tuple[ModelBundle, LoadReport]:
    label = str(path)
    report = LoadReport(layout="ldm")
    unet_state = {n[len(ldm_layout.UNET):]: t for n, t in state.items() if n.startswith(ldm_layout.UNET)}
    ae_state = {n[len(ldm_layout.FIRST_STAGE):]: t for n, t in state.items() if n.startswith(ldm_layout.FIRST_STAGE)}
    if not unet_state:
        raise ModelError(f"{label}: only a first-stage autoencoder under first_stage_model.; no UNet under "
                         "model.diffusion_model.")
    if not ae_state:
        raise ModelError(f"{label}: a UNet without its first stage (no first_stage_model. tensors); "
                         "pass the full latent-diffusion checkpoint")

    ema_names = {name: ldm_layout.ema_name(name) for name in unet_state}
    ema_present = [ema for ema in ema_names.values() if ema in state]
    report.ema_available = bool(ema_present)
    if weights == "ema" and ema_present:
        if len(ema_present) != len(ema_names):
            missing = sorted(set(ema_names.values()) - set(ema_present))
            raise ModelError(f"{label}: the EMA copy lacks {len(missing)} tensors such as {missing[0]}; "
                             "use --weights raw or get an intact file")
        unet_state = {name: state[ema] for name, ema in ema_names.items()}
        report.weights = "ema"
    else:
        report.weights = "raw"
        if weights == "ema":
            report.notes.append("no EMA copy (model_ema.*) in the file; using the raw UNet weights")

    unet = build_model("UNet", UNetModel, settings.unet, infer_unet_config, unet_state, label, report,
                       ldm_layout.UNET)
    unet_config = unet.config
    autoencoder = build_autoencoder(ae_state, label, settings, report, ldm_layout.FIRST_STAGE)

    if settings.schedule is not None:
        schedule = settings.schedule
    elif "betas" in state:
        schedule = ldm_layout.schedule_from_betas(state["betas"], label)
        report.read.append("schedule (betas buffer)")
    else:
        schedule = ScheduleConfig()
        report.defaulted.append("schedule (linear 0.0015 to 0.0195, 1000 steps)")
    if settings.scale_factor is not None:
        scale_factor = settings.scale_factor
    elif "scale_factor" in state:
        scale_factor = float(state["scale_factor"])
        report.read.append("scale_factor (buffer)")
    else:
        scale_factor = 1.0
        report.defaulted.append("scale_factor 1.0")
    conditioning = settings.conditioning
    if conditioning is None:
        conditioning = ldm_layout.conditioning_from_channels(unet_config.in_channels, autoencoder.config.embed_dim)
        report.inferred.append("conditioning (UNet input channels)")
    if unet_config.context_dim is not None and conditioning == "none":
        conditioning = "crossattn"
    class_embedder = None
    if conditioning == "crossattn":
        table = state.get(ldm_layout.COND_STAGE + "embedding.weight")
        if table is None:
            found = "a text encoder" if any(n.startswith(ldm_layout.COND_STAGE + "transformer.") for n in state) \
                else "no class embedding (cond_stage_model.embedding.weight)"
            raise ModelError(f"{label}: a cross-attention model with {found}; genart runs class-conditional "
                             "cross-attention models (cin256) only")
        if table.shape[1] != unet_config.context_dim:
            raise ModelError(f"{label}: class embeddings of width {table.shape[1]} do not match the UNet's "
                             f"context of {unet_config.context_dim}; the config is wrong")
        class_embedder = torch.nn.Embedding(*table.shape)
        load_state_strict(label, class_embedder, {"weight": table}, ldm_layout.COND_STAGE + "embedding.")
        report.read.append(f"class embedder ({table.shape[0]} classes)")

    bundle = ModelBundle(path=path, autoencoder=autoencoder, unet=unet.eval(), schedule=schedule, class_embedder=class_embedder,
                         scale_factor=scale_factor, conditioning=conditioning,
                         model_card=f"latent-diffusion checkpoint {path.name} ({report.weights} weights)",
                         autoencoder_sha256=autoencoder_fingerprint(autoencoder.config, autoencoder.state_dict()))
    return bundle, report


def load_diffusers_folder(folder: Path, weights: str) -> tuple[ModelBundle, LoadReport]:
    """Load a diffusers pipeline folder (vqvae/ or vae/, unet/, scheduler/) or a single model folder."""
    label = str(folder)
    report = LoadReport(layout="diffusers")
    if weights == "raw":
        report.notes.append("diffusers folders hold one copy of the weights; --weights is ignored")

    def component(name: str):
        sub = folder / name
        config_file = sub / "config.json"
        if not config_file.is_file():
            return None, None
        weights_file = sub / "diffusion_pytorch_model.safetensors"
        if not weights_file.is_file():
            raise ModelError(f"{sub}: no diffusion_pytorch_model.safetensors; genart reads safetensors only "
                             "(convert .bin files with `genart convert`)")
        return json.loads(config_file.read_text()), load_file(str(weights_file))

    ae_config_json, ae_state = component("vqvae")
    if ae_config_json is None:
        ae_config_json, ae_state = component("vae")
    unet_config_json, unet_state = component("unet")
    if ae_config_json is None and (folder / "config.json").is_file():
        ae_config_json, ae_state = component(".")
    if ae_config_json is None:
        raise ModelError(f"{label}: no vqvae/ or vae/ folder with a config.json; not a diffusers "
                         "latent-diffusion folder")

    ae_config = diffusers_layout.autoencoder_config_from_diffusers(ae_config_json, label)
    autoencoder = Autoencoder(ae_config)
    load_state_strict(label, autoencoder, diffusers_layout.autoencoder_to_ldm(ae_state, len(ae_config.ch_mult)))
    report.read.append("autoencoder architecture (config.json)")
    # VQ latent-diffusion models use 1.0; diffusers' default of 0.18215 would break them.
    if ae_config.kind == "vq":
        scale_factor = float(ae_config_json.get("scaling_factor", 1.0))
    else:
        scale_factor = float(ae_config_json.get("scaling_factor", 0.18215))
    bundle = ModelBundle(path=folder, autoencoder=autoencoder.eval(), scale_factor=scale_factor,
                         model_card=f"diffusers folder {folder.name}",
                         autoencoder_sha256=autoencoder_fingerprint(ae_config, autoencoder.state_dict()))
    if unet_config_json is not None:
        unet_config = diffusers_layout.unet_config_from_diffusers(unet_config_json, label)
        unet = UNetModel(unet_config)
        mapped = diffusers_layout.unet_to_ldm(unet_state, unet_config.num_res_blocks, unet_config.num_head_channels)
        load_state_strict(label, unet, mapped)
        bundle.unet = unet.eval()
        bundle.conditioning = ldm_layout.conditioning_from_channels(unet_config.in_channels, ae_config.embed_dim)
        report.read.append("UNet architecture (config.json)")
    scheduler_file = folder / "scheduler" / "scheduler_config.json"
    if scheduler_file.is_file():
        bundle.schedule = schedule_from_diffusers(json.loads(scheduler_file.read_text()), label)
        report.read.append("schedule (scheduler_config.json)")
    elif bundle.unet is not None:
        report.defaulted.append("schedule (linear 0.0015 to 0.0195, 1000 steps)")
    report.dtype = describe_dtypes(list(ae_state.values())[:20])
    return bundle, report


def schedule_from_diffusers(config: dict, label: str) -> ScheduleConfig:
    kind = config.get("beta_schedule", "linear")
    if kind != "scaled_linear":
        raise ModelError(f"{label}: scheduler beta_schedule {kind!r} is not supported; genart implements "
                         "'scaled_linear' (latent-diffusion's 'linear')")
    return ScheduleConfig(num_timesteps=config.get("num_train_timesteps", 1000),
                          linear_start=config.get("beta_start", 0.0001), linear_end=config.get("beta_end", 0.02))
