"""Find, check and load the guided-diffusion prior (converted once to safetensors).

The official ``256x256_diffusion_uncond.pt`` is a plain ``state_dict`` pickle. It is read
with the pack's safe loader (``weights_only``), its keys and shapes are checked against the
architecture (a class-conditional or other-size model, or another family, is refused with
a message saying which file is needed), and it is written once as
``256x256_diffusion_uncond.safetensors`` beside it; later runs load that file (the pickle
may then be deleted). The safetensors metadata carries the architecture
(``gendeg_unet_config``), so a tiny model in the same layout (tests, the CPU benchmark)
loads the same way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from ...errors import MissingWeightError, WeightsError
from ...io import atomic_path
from ...weights import get_entry, load_manifest, load_safetensors, load_state_dict, resolve
from ...weights.convert import prepare_tensors
from ...weights.store import find_file
from .guided_diffusion import GUIDED_DIFFUSION_256_UNCOND, GuidedDiffusionUNet, UNetConfig, expected_shapes

log = logging.getLogger("gendeg")

PRIOR_ID = "guided-diffusion-256-uncond"
CONFIG_KEY = "gendeg_unet_config"


def prior_folders(models_dir: str | Path) -> list[Path]:
    """Folders searched for the prior: ``<models>/restore`` (manifest paths are relative to it)."""
    return [Path(models_dir) / "restore", Path(models_dir) / "restore" / "diffloss"]


def resolve_prior(name: str, models_dir: str | Path) -> Path:
    """Path of the prior named ``name`` (manifest id or file name), preferring its converted safetensors.

    Raises :class:`MissingWeightError` (file, folder and fetch command) when neither the
    checkpoint nor its converted copy is there.
    """
    folders = prior_folders(models_dir)
    rel = get_entry(name).files[0].path if name in load_manifest() else name
    sibling = Path(rel).with_suffix(".safetensors")
    converted = (sibling if sibling.exists() else None) if sibling.is_absolute() else find_file(str(sibling), folders)
    if converted is not None and converted.is_file():
        return converted
    try:
        return resolve(name, folders)
    except MissingWeightError as exc:
        raise MissingWeightError(f"DiffLoss prior: {exc}") from None


def _describe_mismatch(sd: Mapping[str, torch.Tensor], want: dict[str, tuple[int, ...]], what: str) -> str | None:
    if "label_emb.weight" in sd:
        return (f"{what} is a class-conditional guided-diffusion model (it has label_emb.weight); DiffLoss uses the "
                f"unconditional 256x256_diffusion_uncond.pt (`gendeg weights fetch {PRIOR_ID}`)")
    missing = [k for k in want if k not in sd]
    unexpected = [k for k in sd if k not in want]
    if not any(k.startswith(("input_blocks.", "middle_block.")) for k in sd):
        return (f"{what} is not a guided-diffusion UNet checkpoint (no input_blocks.* / middle_block.* tensors); "
                f"DiffLoss needs OpenAI's 256x256_diffusion_uncond.pt (`gendeg weights fetch {PRIOR_ID}`)")
    for k, shape in want.items():
        if k in sd and tuple(sd[k].shape) != shape:
            return (f"{what}: {k} has shape {tuple(sd[k].shape)}, expected {shape}: a guided-diffusion model of "
                    "another size or configuration; DiffLoss needs the 256x256 unconditional one (256x256_diffusion_uncond.pt)")
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"lacks {len(missing)} tensors (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"has {len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
        return (f"{what} {' and '.join(parts)}: not the guided-diffusion 256x256 unconditional UNet "
                "(another configuration, or a truncated file)")
    return None


def check_state_dict(sd: Mapping[str, torch.Tensor], config: UNetConfig, what: str = "the prior") -> None:
    """Raise :class:`WeightsError` unless ``sd`` has exactly the keys and shapes of a UNet of ``config``."""
    problem = _describe_mismatch(sd, expected_shapes(config), what)
    if problem:
        raise WeightsError(problem)


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except Exception as exc:  # noqa: BLE001 - any reader error means a bad file
        raise WeightsError(f"{path.name}: not a readable safetensors file ({exc}); re-convert it") from exc


def save_prior(sd: Mapping[str, torch.Tensor], path: str | Path, config: UNetConfig, extra: dict[str, str] | None = None) -> Path:
    """Write a prior state dict as safetensors (atomically) with its architecture in the metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    meta = {"format": "pt", CONFIG_KEY: json.dumps(config.to_dict()), **(extra or {})}
    with atomic_path(path) as tmp:
        save_file(prepare_tensors(sd), str(tmp), metadata=meta)
    return path


def read_prior(path: str | Path, config: UNetConfig | None = None, *, convert: bool = True) -> tuple[dict[str, torch.Tensor], UNetConfig]:
    """The checked state dict and architecture of a prior file (.safetensors or the official pickle).

    The architecture is ``config`` if given, else the one in the safetensors metadata, else
    the official 256 unconditional one. A pickle is converted to safetensors beside it when
    ``convert`` (skipped with a warning when the folder is read-only).
    """
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        meta = _metadata(path)
        if config is None and CONFIG_KEY in meta:
            try:
                config = UNetConfig.from_dict(json.loads(meta[CONFIG_KEY]))
            except (ValueError, TypeError) as exc:
                raise WeightsError(f"{path.name}: unreadable {CONFIG_KEY} metadata ({exc}); re-convert the prior") from exc
        sd = load_safetensors(path)
        config = config or GUIDED_DIFFUSION_256_UNCOND
        check_state_dict(sd, config, path.name)
        return sd, config
    sd = load_state_dict(path)
    config = config or GUIDED_DIFFUSION_256_UNCOND
    check_state_dict(sd, config, path.name)
    if convert:
        dst = path.with_suffix(".safetensors")
        try:
            save_prior(sd, dst, config, {"converted_from": path.name})
            log.info("[GenDeg] converted %s to %s (later runs load the safetensors)", path.name, dst.name)
        except OSError as exc:
            log.warning("[GenDeg] could not write %s (%s); loading the pickle each time", dst, exc)
    return sd, config


def load_prior(path: str | Path, config: UNetConfig | None = None, *, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32, checkpointing: bool = False, convert: bool = True) -> GuidedDiffusionUNet:
    """A frozen (``requires_grad=False``), eval-mode prior from ``path`` on ``device`` in ``dtype``."""
    sd, config = read_prior(path, config, convert=convert)
    with torch.device("meta"):
        net = GuidedDiffusionUNet(config, checkpointing=checkpointing)
    net.load_state_dict(sd, strict=True, assign=True)
    return net.to(device=device, dtype=dtype).requires_grad_(False).eval()
