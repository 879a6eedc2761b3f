"""``GenDegTask``: fine-tune GenDeg (LoRA or full) on the shared training loop.

What is trained: the UNet (LoRA adapters on its attention layers, or every weight) and,
always, the two intensity projections at ``projection_lr_scale`` (official 10) times the
UNet's learning rate. The VAE and the CLIP text encoder stay frozen (they are part of the
network module so the loop puts them on the device, but frozen parameters are neither
optimised, averaged, checkpointed nor exported). The EMA averages the UNet's trained
weights; the projections are exported raw, as in the official code.

Exports ``<out>/<name>.safetensors``: a GenDeg LoRA (:mod:`core.gendeg.lora`) or a whole
GenDeg in the pack's single-file layout (with a ``tokenizer/`` copy beside it), both read
by GenDeg Model Loader.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import InputError
from ...gendeg import lora as lora_io
from ...gendeg.model import GenDegModel, build_model, find_tokenizer_folder, load_tokenizer
from ...weights.safe_load import encode_metadata
from ..data.seeding import STREAM_INIT, derive_seed
from ..engine import StepContext, TrainTask
from .config import GenDegTrainConfig
from .objective import ObjectiveInputs, eps_mse, prepare_inputs, sd_alphas_cumprod

log = logging.getLogger("gendeg")

PROJECTIONS = ("stats_proj.", "cc_projection.")


class GenDegTrainNet(nn.Module):
    """The trained network: ``forward`` = projections + UNet (so data parallelism sees every trained weight);
    ``vae`` and ``text_encoder`` ride along frozen."""

    def __init__(self, unet: nn.Module, vae: nn.Module, text_encoder: nn.Module, stats_proj: nn.Linear,
                 cc_projection: nn.Linear) -> None:
        super().__init__()
        self.unet, self.vae, self.text_encoder = unet, vae, text_encoder
        self.stats_proj, self.cc_projection = stats_proj, cc_projection

    def context(self, text: torch.Tensor, one_hots: torch.Tensor) -> torch.Tensor:
        """``cc_projection(cat(text [B,77,D], stats_proj(one_hots [B,2,129])ᵀ))`` -> ``[B,77,D]``."""
        stats = self.stats_proj(one_hots).transpose(1, 2)
        return self.cc_projection(torch.cat([text, stats], dim=-1))

    def forward(self, noisy: torch.Tensor, image_latent: torch.Tensor, t: torch.Tensor, text: torch.Tensor,
                one_hots: torch.Tensor) -> torch.Tensor:
        """ε̂ ``[B,4,h,w]`` of the UNet on ``cat(z_t, c_lat)`` with the fused cross-attention context."""
        ctx = self.context(text, one_hots)
        return self.unet(torch.cat([noisy, image_latent], dim=1), t, encoder_hidden_states=ctx).sample

    def train(self, mode: bool = True) -> GenDegTrainNet:
        super().train(mode)
        self.vae.eval()
        self.text_encoder.eval()
        return self


def resolve_base(base: str, models_dir: Path) -> Path:
    """The base GenDeg: a path, or a name in ``<models>/gendeg``."""
    from ...weights import resolve

    p = Path(base).expanduser()
    if p.exists():
        return p
    return resolve(base, [models_dir / "gendeg"])


class GenDegTask(TrainTask):
    """GenDeg fine-tuning under the official objective (see :mod:`.objective`)."""

    name = "gendeg"

    def __init__(self, config: GenDegTrainConfig, models_dir: Path, summary: Mapping[str, Any]) -> None:
        self.config, self.models_dir, self.summary = config, models_dir, dict(summary)
        self.tokenizer: Any = None
        self.tokenizer_dir: Path | None = None
        self.configs: dict[str, Any] = {}
        self.alphas_cumprod = sd_alphas_cumprod()
        self.base_path: Path | None = None

    # -- network ------------------------------------------------------------------------

    def build_network(self) -> GenDegTrainNet:
        from ...gendeg.convert import read_checkpoint

        mc = self.config.model
        path = resolve_base(mc.base, self.models_dir)
        self.base_path = path
        weights = read_checkpoint(path, ema=mc.unet_weights == "ema")
        here = [path] if path.is_dir() else [path.parent / "tokenizer", path.parent / (path.name.split(".")[0] + "_tokenizer")]
        dirs = here + [self.models_dir / "clip", self.models_dir / "gendeg"]
        folder = find_tokenizer_folder(dirs)
        if folder is None:
            raise InputError(f"{path}: no CLIP tokenizer (vocab.json, merges.txt) next to it or in {self.models_dir / 'clip'}; "
                             "put the tokenizer folder of openai/clip-vit-large-patch14 there")
        self.tokenizer_dir = folder
        self.tokenizer = load_tokenizer(folder, max_length=int(weights.projections["stats_proj.weight"].shape[0]))
        self.configs = {"unet_config": weights.unet_config, "vae_config": weights.vae_config,
                        "text_config": weights.text_config}
        model = build_model(weights, self.tokenizer, dtype="fp32", device="cpu")
        del weights
        unet = model.unet
        unet.requires_grad_(mc.mode == "full")
        if mc.mode == "lora":
            lo = mc.lora
            lora_io.add_adapter(unet, lo.rank, lo.alpha, lo.targets, lo.dropout, seed=derive_seed(self.config.seed, STREAM_INIT))
        if mc.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        for proj in (model.stats_proj, model.cc_projection):
            proj.requires_grad_(True)
        net = GenDegTrainNet(unet, model.vae, model.text_encoder, model.stats_proj, model.cc_projection)
        self._net = net  # the loop moves it in place; the full export takes the frozen parts from it
        return net.train()

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        scale = self.config.model.projection_lr_scale
        unet = [p for p in model.unet.parameters() if p.requires_grad]
        return [{"params": unet, "lr_scale": 1.0},
                {"params": list(model.cc_projection.parameters()), "lr_scale": scale},
                {"params": list(model.stats_proj.parameters()), "lr_scale": scale}]

    def ema_keys(self, model: nn.Module, trained: list[str]) -> list[str]:
        return [k for k in trained if not k.startswith(PROJECTIONS)]  # projections: raw (official)

    # -- objective ----------------------------------------------------------------------

    def inputs(self, net: GenDegTrainNet, batch: Mapping[str, Any], g: torch.Generator, autocast: Any = None,
               uncond: float | None = None) -> ObjectiveInputs:
        """The UNet's inputs for one micro-batch (frozen encoders, dropout, timesteps, noise from ``g``)."""
        length = int(net.stats_proj.weight.shape[0])  # 77 tokens

        def encode_text(prompts: list[str]) -> torch.Tensor:
            ids = self.tokenizer(prompts, truncation=True, max_length=length, padding="max_length", return_tensors="pt")
            return net.text_encoder(input_ids=ids["input_ids"].to(batch["clean"].device)).last_hidden_state

        with autocast() if autocast is not None else contextlib.nullcontext():
            return prepare_inputs(net.vae, encode_text, batch["clean"], batch["degraded"], list(batch["prompt"]),
                                  batch["one_hots"], self.alphas_cumprod, g,
                                  self.config.objective.uncond if uncond is None else uncond)

    def loss_terms(self, model: nn.Module, batch: Mapping[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        net = getattr(model, "module", model)
        inp = self.inputs(net, batch, ctx.generator, ctx.autocast)
        with ctx.autocast():
            eps = model(inp.noisy, inp.image_latent, inp.t, inp.text, inp.one_hots)
        return {"mse": eps_mse(eps, inp.noise)}

    # -- validation and export ----------------------------------------------------------

    def validator(self, samples: list[dict[str, Any]], folder: Path, models_dir: Path | None) -> Any:
        from .validate import GenDegValidator

        return GenDegValidator(self, samples, folder)

    def view(self, net: GenDegTrainNet, device: torch.device) -> GenDegModel:
        """The training network's parts as a :class:`GenDegModel` (shared modules, no copies) for sampling."""
        return GenDegModel(unet=net.unet, vae=net.vae, text_encoder=net.text_encoder, tokenizer=self.tokenizer,
                           stats_proj=net.stats_proj, cc_projection=net.cc_projection, dtype=torch.float32,
                           device=device, offload_device=device, info={"name": self.config.name})

    def phrases(self) -> dict[str, str]:
        return {k: v["phrase"] for k, v in self.summary.get("types", {}).items()}

    def presets(self) -> dict[str, dict[str, list[float]]]:
        return {k: {lvl: v[lvl] for lvl in ("light", "medium", "heavy")} for k, v in self.summary.get("types", {}).items()}

    def metadata(self) -> dict[str, Any]:
        mc = self.config.model
        return {"phrases": self.phrases(), "presets": self.presets(),
                "base": {"name": Path(mc.base).name, "unet_weights": mc.unet_weights},
                "gendeg.training": {"mode": mc.mode}}

    def export(self, path: Path, weights: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> Path:
        if self.config.model.mode == "lora":
            lo = self.config.model.lora
            tensors = {k: v for k, v in weights.items() if k.startswith(PROJECTIONS)}
            unet_sd = {k[len("unet."):]: v for k, v in weights.items() if k.startswith("unet.")}
            for file_key, module_key in lora_io.adapter_keys(unet_sd, "unet.").items():
                tensors[file_key] = unet_sd[module_key]
            return lora_io.save_lora(path, tensors, {"rank": lo.rank, "alpha": lo.alpha, "targets": list(lo.targets)},
                                     metadata)
        return self._export_full(path, weights, metadata)

    def _export_full(self, path: Path, weights: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> Path:
        from ...gendeg.convert import GenDegWeights, _jsonable, save_converted

        net: GenDegTrainNet = self._net
        cpu = {k: v.detach().to("cpu") for k, v in weights.items()}
        gw = GenDegWeights(
            unet={k[len("unet."):]: v for k, v in cpu.items() if k.startswith("unet.")},
            vae={k: v.detach().to("cpu") for k, v in net.vae.state_dict().items()},
            text_encoder={k: v.detach().to("cpu") for k, v in net.text_encoder.state_dict().items()},
            projections={k: v for k, v in cpu.items() if k.startswith(PROJECTIONS)},
            unet_config=_jsonable(self.configs["unet_config"]), vae_config=_jsonable(self.configs["vae_config"]),
            text_config=_jsonable(self.configs["text_config"]), ema=True,
        )
        save_converted(gw, path, encode_metadata(metadata))
        self._copy_tokenizer(path.parent / "tokenizer")
        return path

    def _copy_tokenizer(self, dest: Path) -> None:
        if self.tokenizer_dir is None or dest.resolve() == self.tokenizer_dir.resolve() or dest.is_dir():
            return
        tmp = dest.with_name(dest.name + ".part")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(self.tokenizer_dir, tmp)
        tmp.rename(dest)



def train_gendeg(
    config: GenDegTrainConfig,
    *,
    device: str | None = None,
    resume: bool = False,
    models_dir: str | Path | None = None,
    progress: bool = True,
    data: Any = None,
) -> Any:
    """Fine-tune the GenDeg described by ``config``; returns the loop's ``TrainResult``."""
    import os

    from ..engine import run_training
    from .data import build_gendeg_data

    models = Path(models_dir or os.environ.get("GENDEG_MODELS_DIR", "models"))
    data = data or build_gendeg_data(config.data, config.seed)
    task = GenDegTask(config, models, data.summary)
    return run_training(config, task, data, device=device, resume=resume, progress=progress, models_dir=models)
