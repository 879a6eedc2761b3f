"""The GenDeg model object (``GENDEG_MODEL``): diffusers parts, the two projections, dtype/device policy.

* ``unet``: ``UNet2DConditionModel`` with 8 input channels (noisy latent ‖ clean latent).
* ``vae``: ``AutoencoderKL``; the clean latent is the posterior *mode* without the 0.18215
  scaling, the sampled latent is divided by ``scaling_factor`` before decoding.
* ``text_encoder`` / ``tokenizer``: CLIP ViT-L/14 text tower (last hidden state, 77 tokens,
  padded to max length, as the official ``FrozenCLIPEmbedder``).
* ``stats_proj`` ``Linear(129→77)`` and ``cc_projection`` ``Linear(770→768)`` (raw weights:
  they are outside the EMA in the official training).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError, WeightsError
from .convert import GenDegWeights, read_checkpoint

log = logging.getLogger("gendeg")

TOKENIZER_FILES = ("vocab.json", "merges.txt")


def resolve_dtype(name: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on CUDA with bf16 support, else fp16 on CUDA/MPS, fp32 on CPU."""
    if isinstance(name, torch.dtype):
        return name
    table = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
             "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if name in table:
        return table[name]
    if name != "auto":
        raise InputError(f"unknown dtype {name!r}; choose auto, fp32, fp16 or bf16")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def _has_tokenizer(d: Path) -> bool:
    return all((d / f).is_file() for f in TOKENIZER_FILES) or (d / "tokenizer.json").is_file()


def find_tokenizer_folder(candidates: list[Path]) -> Path | None:
    """The first folder holding a CLIP tokenizer (``vocab.json`` + ``merges.txt``, or ``tokenizer.json``),
    searching each candidate, its ``tokenizer/`` and its sub-folders (and their ``tokenizer/``)."""
    for c in candidates:
        if not c.is_dir():
            continue
        for d in [c, c / "tokenizer", *sorted(p for p in c.iterdir() if p.is_dir())]:
            if d.is_dir() and _has_tokenizer(d):
                return d
            if (d / "tokenizer").is_dir() and _has_tokenizer(d / "tokenizer"):
                return d / "tokenizer"
    return None


def load_tokenizer(folder: str | Path, max_length: int = 77) -> Any:
    """A ``CLIPTokenizer`` from local files only (never fetched)."""
    from transformers import CLIPTokenizer

    folder = Path(folder)
    if not _has_tokenizer(folder):
        raise WeightsError(f"{folder}: no tokenizer files (vocab.json + merges.txt, or tokenizer.json of CLIP ViT-L/14)")
    if all((folder / f).is_file() for f in TOKENIZER_FILES):
        return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)
    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True, model_max_length=max_length)


@dataclass
class GenDegModel:
    """A loaded GenDeg generator. ``dtype``/``device`` say where it computes; ``offload_device`` where it waits."""

    unet: nn.Module
    vae: nn.Module
    text_encoder: nn.Module
    tokenizer: Any
    stats_proj: nn.Linear
    cc_projection: nn.Linear
    dtype: torch.dtype = torch.float32
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    offload_device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    info: dict[str, Any] = field(default_factory=dict)
    compile: bool = False
    _compiled: bool = False

    # --- placement ---------------------------------------------------------------------

    @property
    def vae_dtype(self) -> torch.dtype:
        """The SD 1.x VAE overflows in fp16: it runs in fp32 then (bf16 is fine)."""
        return torch.float32 if self.dtype == torch.float16 else self.dtype

    def to_compute(self, device: torch.device | None = None) -> GenDegModel:
        """Move every part to the compute device (weights in ``dtype``; channels-last on CUDA)."""
        dev = torch.device(device) if device is not None else self.device
        self.device = dev
        for module, dtype in ((self.unet, self.dtype), (self.text_encoder, self.dtype), (self.vae, self.vae_dtype)):
            p = next(module.parameters())
            if p.dtype != dtype:  # (diffusers warns on every dtype cast, even a no-op one)
                module.to(dtype=dtype)
            if p.device != dev:
                module.to(device=dev)
        self.stats_proj.to(device=dev, dtype=torch.float32)
        self.cc_projection.to(device=dev, dtype=torch.float32)
        if dev.type == "cuda":
            self.unet.to(memory_format=torch.channels_last)
            if self.compile and not self._compiled:
                self.unet = torch.compile(self.unet, mode="max-autotune-no-cudagraphs")
                self._compiled = True
        return self

    def offload(self) -> GenDegModel:
        """Move the parts to the offload device (CPU by default) while idle."""
        if self.offload_device == self.device:
            return self
        for m in (self.unet, self.text_encoder, self.vae, self.stats_proj, self.cc_projection):
            m.to(self.offload_device)
        return self

    def parameter_device(self) -> torch.device:
        return next(self.cc_projection.parameters()).device

    # --- conditioning ------------------------------------------------------------------

    @property
    def max_length(self) -> int:
        return int(self.stats_proj.weight.shape[0])

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """CLIP last hidden state ``[B, 77, D]`` (float32) of prompts padded to 77 tokens."""
        dev = self.parameter_device()
        batch = self.tokenizer(
            prompts, truncation=True, max_length=self.max_length, padding="max_length", return_tensors="pt"
        )
        ids = batch["input_ids"].to(dev)
        out = self.text_encoder(input_ids=ids)
        return out.last_hidden_state.float()

    @torch.no_grad()
    def context(self, text_emb: torch.Tensor, one_hots: torch.Tensor) -> torch.Tensor:
        """Cross-attention context: ``cc_projection(cat(text [B,77,D], stats_proj(one_hots)ᵀ [B,77,2]))``."""
        dev = self.parameter_device()
        stats = self.stats_proj(one_hots.to(dev, torch.float32))  # [B, 2, 77]
        stats = stats.transpose(1, 2)  # [B, 77, 2]
        return self.cc_projection(torch.cat([text_emb.to(dev, torch.float32), stats], dim=-1))

    def describe(self) -> str:
        return json.dumps({k: v for k, v in self.info.items() if isinstance(v, (str, int, float, bool))})


def build_model(
    weights: GenDegWeights,
    tokenizer: Any,
    *,
    dtype: str | torch.dtype = "auto",
    device: torch.device | str = "cpu",
    offload_device: torch.device | str = "cpu",
    compile: bool = False,
) -> GenDegModel:
    """Instantiate the diffusers / transformers modules and load ``weights`` strictly."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    device = torch.device(device)
    if int(weights.unet_config.get("in_channels", 0)) != 8:
        raise WeightsError(
            f"the UNet has {weights.unet_config.get('in_channels')} input channels; GenDeg's has 8. "
            "This is not a GenDeg checkpoint."
        )
    unet = UNet2DConditionModel.from_config(weights.unet_config)
    vae = AutoencoderKL.from_config(weights.vae_config)
    text_encoder = CLIPTextModel(CLIPTextConfig(**weights.text_config))
    text_sd = fit_text_keys(weights.text_encoder, text_encoder)
    for module, sd, what in ((unet, weights.unet, "UNet"), (vae, weights.vae, "VAE"), (text_encoder, text_sd, "text encoder")):
        _load_strict(module, sd, what)
    sw, cw = weights.projections["stats_proj.weight"], weights.projections["cc_projection.weight"]
    stats_proj = nn.Linear(sw.shape[1], sw.shape[0])
    cc_projection = nn.Linear(cw.shape[1], cw.shape[0])
    stats_proj.load_state_dict({"weight": sw, "bias": weights.projections["stats_proj.bias"]})
    cc_projection.load_state_dict({"weight": cw, "bias": weights.projections["cc_projection.bias"]})
    hidden = int(weights.text_config["hidden_size"])
    if cw.shape[0] != hidden or sw.shape[0] != int(weights.text_config["max_position_embeddings"]):
        raise WeightsError(
            f"GenDeg projections do not fit the text encoder: cc_projection {tuple(cw.shape)}, stats_proj "
            f"{tuple(sw.shape)}, text width {hidden}; the parts come from different checkpoints"
        )
    if unet.config.cross_attention_dim != hidden:
        raise WeightsError(
            f"the UNet attends to width {unet.config.cross_attention_dim} but the text encoder gives {hidden}"
        )
    for m in (unet, vae, text_encoder, stats_proj, cc_projection):
        m.eval().requires_grad_(False)
    model = GenDegModel(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        stats_proj=stats_proj,
        cc_projection=cc_projection,
        dtype=resolve_dtype(dtype, device),
        device=device,
        offload_device=torch.device(offload_device),
        info={**weights.info, "ema": weights.ema},
        compile=compile,
    )
    return model


def fit_text_keys(sd: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    """Our files keep the CLIP text keys of checkpoints (``text_model.*``); transformers >= 5 names
    them without that prefix. Return ``sd`` in the installed module's naming."""
    wants_prefix = any(k.startswith("text_model.") for k in module.state_dict())
    out = {}
    for k, v in sd.items():
        bare = k[len("text_model.") :] if k.startswith("text_model.") else k
        out[("text_model." + bare) if wants_prefix else bare] = v
    return out


def _load_strict(module: nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    result = module.load_state_dict(sd, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing:
        raise WeightsError(
            f"GenDeg {what}: {len(missing)} tensors missing from the checkpoint (first: {missing[0]}); "
            "the file is incomplete or of another model family"
        )
    if result.unexpected_keys:
        raise WeightsError(
            f"GenDeg {what}: {len(result.unexpected_keys)} unexpected tensors (first: {result.unexpected_keys[0]}); "
            "the checkpoint does not match the expected architecture"
        )


def load_gendeg(
    path: str | Path,
    *,
    tokenizer_dirs: list[Path] | None = None,
    ema: bool = True,
    dtype: str | torch.dtype = "auto",
    device: torch.device | str = "cpu",
    offload_device: torch.device | str = "cpu",
    compile: bool = False,
    cache: bool = True,
) -> GenDegModel:
    """Load a GenDeg generator from a Lightning ``.ckpt``, our ``.safetensors`` or a diffusers folder.

    The tokenizer is looked for next to the checkpoint (a ``tokenizer/`` folder, or the
    diffusers folder's), then in ``tokenizer_dirs`` (e.g. ``models/gendeg/clip``).
    """
    path = Path(path)
    weights = read_checkpoint(path, ema=ema, cache=cache)
    here = [path] if path.is_dir() else [path.parent / "tokenizer", path.parent / (path.name.split(".")[0] + "_tokenizer")]
    folder = find_tokenizer_folder(here + list(tokenizer_dirs or []))
    if folder is None:
        searched = ", ".join(str(p) for p in here + list(tokenizer_dirs or []))
        raise WeightsError(
            "GenDeg needs the CLIP ViT-L/14 tokenizer files (vocab.json, merges.txt) and none were found "
            f"(searched {searched}). Put the 'tokenizer' folder of openai/clip-vit-large-patch14 (or of "
            "stable-diffusion-v1-5) in models/gendeg/clip/clip-vit-large-patch14/; nothing is downloaded implicitly."
        )
    tokenizer = load_tokenizer(folder, max_length=int(weights.projections["stats_proj.weight"].shape[0]))
    weights.info.update({"path": str(path), "tokenizer": str(folder)})
    return build_model(weights, tokenizer, dtype=dtype, device=device, offload_device=offload_device, compile=compile)


def save_diffusers_folder(model: GenDegModel, folder: str | Path) -> Path:
    """Write the model as a diffusers-style folder that :func:`load_gendeg` reads back."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.unet.save_pretrained(folder / "unet", safe_serialization=True)
    model.vae.save_pretrained(folder / "vae", safe_serialization=True)
    model.text_encoder.save_pretrained(folder / "text_encoder")
    model.tokenizer.save_pretrained(folder / "tokenizer")
    proj = {f"stats_proj.{k}": v.contiguous() for k, v in model.stats_proj.state_dict().items()}
    proj.update({f"cc_projection.{k}": v.contiguous() for k, v in model.cc_projection.state_dict().items()})
    save_file(proj, str(folder / "gendeg_projections.safetensors"))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "GenDeg", "unet": ["diffusers", "UNet2DConditionModel"],
                                                         "vae": ["diffusers", "AutoencoderKL"],
                                                         "text_encoder": ["transformers", "CLIPTextModel"],
                                                         "tokenizer": ["transformers", "CLIPTokenizer"]}, indent=1))
    return folder
