"""Tiny random GenDeg models in the official (LDM / PyTorch-Lightning) key layout, for tests.

The diffusers -> LDM key maps below are written independently of the pack's converter
(which uses diffusers' own single-file utilities), so a round trip through both checks
that conversion preserves every tensor.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import torch

TINY_UNET = dict(
    sample_size=8,
    in_channels=8,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=8,
)
TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
    up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    block_out_channels=(32, 64),
    layers_per_block=1,
    latent_channels=4,
    sample_size=32,
)


def tiny_tokenizer_files(folder: Path) -> Path:
    """A tiny CLIP BPE vocabulary (letters, a few merges) written as vocab.json + merges.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    letters = list("abcdefghijklmnopqrstuvwxyz")
    tokens = ["!", ",", "-", "."] + letters
    vocab_list = tokens + [t + "</w>" for t in tokens] + ["in", "in</w>", "th", "the</w>"]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(vocab_list)}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\ni n\ni n</w>\nt h\nth e</w>\n")
    return folder


def tiny_diffusers_parts(seed: int = 0):  # noqa: ANN201
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_UNET)
    vae = AutoencoderKL(**TINY_VAE)
    vocab_size = 4 * 2 * 2 + 26 * 2 + 4 + 2
    text = CLIPTextModel(
        CLIPTextConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=1, max_position_embeddings=77, hidden_act="quick_gelu",
                       bos_token_id=0, eos_token_id=2, pad_token_id=1, projection_dim=32)
    )
    # random (not zero) weights everywhere so that any key mix-up changes outputs
    with torch.no_grad():
        for m in (unet, vae, text):
            for p in m.parameters():
                p.add_(torch.randn_like(p) * 0.02)
    stats_proj = torch.nn.Linear(129, 77)
    cc = torch.nn.Linear(34, 32)
    return unet, vae, text, stats_proj, cc


_RES = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
        "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def unet_to_ldm(sd: dict[str, torch.Tensor], layers: int = 1) -> dict[str, torch.Tensor]:
    """diffusers UNet keys -> LDM ``openaimodel.UNetModel`` keys (SD 1.x layout)."""
    out = {}
    top = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
           "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    attn_up = {int(k.split(".")[1]) for k in sd if k.startswith("up_blocks.") and ".attentions." in k}
    for k, v in sd.items():
        p = k.split(".")
        new = None
        for d, ldm in top.items():
            if k.startswith(d + "."):
                new = ldm + k[len(d):]
        if p[0] == "down_blocks":
            i, kind = int(p[1]), p[2]
            if kind == "resnets":
                new = f"input_blocks.{i * (layers + 1) + int(p[3]) + 1}.0." + _res(p[4:])
            elif kind == "attentions":
                new = f"input_blocks.{i * (layers + 1) + int(p[3]) + 1}.1." + ".".join(p[4:])
            elif kind == "downsamplers":
                new = f"input_blocks.{(i + 1) * (layers + 1)}.0.op." + ".".join(p[5:])
        elif p[0] == "up_blocks":
            i, kind = int(p[1]), p[2]
            if kind == "resnets":
                new = f"output_blocks.{i * (layers + 1) + int(p[3])}.0." + _res(p[4:])
            elif kind == "attentions":
                new = f"output_blocks.{i * (layers + 1) + int(p[3])}.1." + ".".join(p[4:])
            elif kind == "upsamplers":
                new = f"output_blocks.{i * (layers + 1) + layers}.{2 if i in attn_up else 1}.conv." + ".".join(p[5:])
        elif p[0] == "mid_block":
            if p[1] == "resnets":
                new = f"middle_block.{2 * int(p[2])}." + _res(p[3:])
            else:
                new = "middle_block.1." + ".".join(p[3:])
        assert new is not None, k
        out["model.diffusion_model." + new] = v
    return out


def _res(rest: list[str]) -> str:
    return _RES[rest[0]] + "." + ".".join(rest[1:])


def vae_to_ldm(sd: dict[str, torch.Tensor], levels: int = 2) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL keys -> LDM ``AutoencoderKL`` keys."""
    out = {}
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}
    for k, v in sd.items():
        p = k.split(".")
        part = p[0]
        if part in ("quant_conv", "post_quant_conv"):
            new = k
        elif p[1] in ("conv_in", "conv_out"):
            new = k
        elif p[1] == "conv_norm_out":
            new = f"{part}.norm_out." + p[-1]
        elif p[1] in ("down_blocks", "up_blocks"):
            i = int(p[2]) if p[1] == "down_blocks" else levels - 1 - int(p[2])
            name = "down" if p[1] == "down_blocks" else "up"
            if p[3] == "resnets":
                sub = "nin_shortcut" if p[5] == "conv_shortcut" else p[5]
                new = f"{part}.{name}.{i}.block.{p[4]}.{sub}.{p[-1]}"
            else:
                new = f"{part}.{name}.{i}.{'downsample' if name == 'down' else 'upsample'}.conv.{p[-1]}"
        elif p[1] == "mid_block":
            if p[2] == "resnets":
                new = f"{part}.mid.block_{int(p[3]) + 1}.{'.'.join(p[4:])}"
            else:
                new = f"{part}.mid.attn_1.{attn[p[4]]}.{p[-1]}"
                if v.ndim == 2:
                    v = v[:, :, None, None]
        else:
            raise AssertionError(k)
        out["first_stage_model." + new] = v
    return out


def official_state_dict(parts, ema_offset: float = 0.05) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(Lightning ``state_dict``, the EMA UNet in diffusers names) of tiny random parts.

    The raw UNet is ``EMA + ema_offset`` so EMA selection is visible in outputs.
    """
    unet, vae, text, stats_proj, cc = parts
    ema_unet = {k: v.clone() for k, v in unet.state_dict().items()}
    raw_unet = {k: v + ema_offset for k, v in ema_unet.items()}
    sd = unet_to_ldm(raw_unet)
    for k, v in unet_to_ldm(ema_unet).items():
        sd["model_ema." + "".join(k.split(".")[1:])] = v
    sd["model_ema.decay"] = torch.tensor(0.9999)
    sd["model_ema.num_updates"] = torch.tensor(1000, dtype=torch.int32)
    sd.update(vae_to_ldm(vae.state_dict()))
    for k, v in text.state_dict().items():  # checkpoints name them text_model.* (transformers 4 layout)
        sd["cond_stage_model.transformer." + (k if k.startswith("text_model.") else "text_model." + k)] = v
    sd["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    sd["stats_proj.weight"], sd["stats_proj.bias"] = stats_proj.weight.detach(), stats_proj.bias.detach()
    sd["cc_projection.weight"], sd["cc_projection.bias"] = cc.weight.detach(), cc.bias.detach()
    sd["betas"] = torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    sd["scale_factor"] = torch.tensor(0.18215)
    return sd, ema_unet


def save_lightning_ckpt(sd: dict[str, torch.Tensor], path: Path) -> Path:
    """Save like PyTorch Lightning does, with a pickled callback object beside the weights."""
    mod_name = "pytorch_lightning.callbacks.model_checkpoint"
    created = []
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", mod_name):
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
            created.append(name)
    try:
        cls = type("ModelCheckpoint", (), {"__module__": mod_name})
        sys.modules[mod_name].ModelCheckpoint = cls
        cb = cls()
        cb.best_model_score = 0.1
        cb.monitor = "val/loss_simple_ema"
        obj = {"epoch": 3, "global_step": 1234, "pytorch-lightning_version": "1.4.2", "state_dict": sd,
               "callbacks": {"ModelCheckpoint": cb}}
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(obj, path)
    finally:
        for name in created:
            sys.modules.pop(name, None)
    return path


def make_tiny_checkpoint(folder: Path, seed: int = 0, name: str = "gendeg.ckpt"):  # noqa: ANN201
    """Write ``folder/name`` (official layout) and ``folder/tokenizer``; returns (path, parts, ema_unet_sd)."""
    parts = tiny_diffusers_parts(seed)
    sd, ema_unet = official_state_dict(parts)
    path = save_lightning_ckpt(sd, folder / name)
    tiny_tokenizer_files(folder / "tokenizer")
    return path, parts, ema_unet


def tiny_original_config() -> dict:
    """The LDM yaml (as a mapping) that describes the tiny UNet/VAE, for diffusers' from_single_file."""
    return {
        "model": {
            "params": {
                "scale_factor": 0.18215,
                "unet_config": {"params": {
                    "in_channels": 8, "out_channels": 4, "model_channels": 32, "attention_resolutions": [1],
                    "num_res_blocks": 1, "channel_mult": [1, 2], "num_heads": 8, "use_spatial_transformer": True,
                    "transformer_depth": 1, "context_dim": 32, "legacy": False}},
                "first_stage_config": {"params": {"embed_dim": 4, "ddconfig": {
                    "double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 32,
                    "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}}},
            }
        }
    }
