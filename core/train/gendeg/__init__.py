"""GenDeg fine-tuning (``gendeg train gendeg``): config, data, the official objective, the task, validation.

* :mod:`.config` — ``GenDegTrainConfig`` (shares the loop sections of the restorer's config);
* :mod:`.data` — pairs with prompts (caption + type phrase) and GenDeg's measured (μ, σ);
* :mod:`.objective` — eps-MSE on the SD 1.5 schedule with the official CFG dropout;
* :mod:`.task` — the network (LoRA or full UNet + the projections), optimizer groups, export;
* :mod:`.validate` — a fixed clean image degraded at three μ levels.
"""
