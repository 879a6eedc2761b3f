"""Training engine: one readable loop on Hugging Face accelerate for every trainable model.

* :mod:`.config` / :mod:`.schema` — the YAML config, validated against documented dataclasses;
* :mod:`.data` — paired datasets, gt/lq folders, or clean photos degraded on the fly, as a pure
  function of (seed, sample number), with a fixed validation split;
* :mod:`.archs` — trainable architectures (spandrel's own classes, so exports load everywhere);
* :mod:`.losses` — one registry of losses (pixel, structural, perceptual, DiffLoss, Perceive-IR);
* :mod:`.engine` — the loop: mixed precision, accumulation, clipping, EMA, atomic checkpoints,
  exact resume, validation, metrics;
* :mod:`.checkpoint` / :mod:`.export` — checkpoints, the spandrel-ready safetensors, dataset export.

Nothing here imports ComfyUI or ``nodes``.
"""
