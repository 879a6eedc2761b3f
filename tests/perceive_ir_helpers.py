"""Tiny random stand-ins for Perceive-IR's files, in the release's layouts (CLIP, prompts, DINOv2, restorer)."""

from __future__ import annotations

import torch
from comfyui_gendeg.core.restore.nets.perceive_ir import PerceiveIR

N_CTX = 16
#: A restorer small enough for CPU tests (semantic width = the tiny DINOv2's 16).
TINY = dict(dim=8, blocks=(1, 1, 1, 1), heads=(1, 1, 2, 2), refinement_blocks=1, semantic_dim=16)


def make_clip(folder, seed=0):
    """A tiny random CLIP whose end token has the largest id (as OpenAI's 49407), saved like a real folder."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    chars = sorted(ByteLevel.alphabet())
    vocab = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    ids = {t: i for i, t in enumerate(vocab)}
    tok = CLIPTokenizer(vocab=ids, merges=[])
    bos, eos = ids["<|startoftext|>"], ids["<|endoftext|>"]
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=24, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=16,
        logit_scale_init_value=4.6052,
    )
    torch.manual_seed(seed)
    CLIPModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def official_prompts_file(path, clip, seed=1, length=24, names=("terrible", "mediocre", "excellent"), **extra):
    """A stage-1 checkpoint in the release's layout for ``clip`` (rows in ``names`` order)."""
    emb = clip.model.text_model.embeddings.token_embedding.weight.detach()
    cfg = clip.model.config.text_config
    x_id = clip.tokenizer.convert_tokens_to_ids("X</w>")
    ids = [cfg.bos_token_id] + [x_id] * N_CTX + [cfg.eos_token_id] + [0] * (length - N_CTX - 2)
    tokenized = torch.tensor([ids] * 3)
    full = emb[tokenized]
    g = torch.Generator().manual_seed(seed)
    context = torch.randn(3, N_CTX, emb.shape[1], generator=g) * 0.5
    state = {
        "prompt_learner": {"context": context, "token_prefix": full[:, :1].clone(), "token_suffix": full[:, 1 + N_CTX:].clone(),
                           "tokenized_prompts": tokenized},
        "optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(3, N_CTX, emb.shape[1])}},
                      "param_groups": [{"lr": 2e-3, "betas": (0.9, 0.999), "params": [0]}]},
        "scheduler": {"T_max": 100, "eta_min": 1e-6, "last_epoch": 3, "base_lrs": [2e-3]},
        "iteration": 100000, "quality_names": tuple(names), "context_length": N_CTX, "task_balanced": True,
    }
    state.update(extra)
    torch.save(state, path)
    return context


def make_dino(folder, hidden=16, layers=12, seed=0):
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    cfg = Dinov2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=32,
                       patch_size=14, image_size=224)
    Dinov2Model(cfg).save_pretrained(folder)
    return folder


def official_checkpoint(path, seed=0, **cfg):
    """A restorer checkpoint in the release's layout: {model, iteration, config} plus optimizer state."""
    torch.manual_seed(seed)
    opts = {**TINY, **cfg}
    net = PerceiveIR(**opts)
    config = {"model": {"dim": opts["dim"], "blocks": list(opts["blocks"]), "heads": list(opts["heads"]),
                        "refinement_blocks": opts["refinement_blocks"]},
              "pretrained": {"dinov2": "weight/dinov2-base"}, "seed": 3407}
    torch.save({"model": net.state_dict(), "iteration": 420000, "config": config,
                "optimizer": {"state": {}, "param_groups": [{"lr": 2e-4, "params": [0]}]}}, path)
    return net
