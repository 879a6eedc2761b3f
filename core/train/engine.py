"""The training loop of ``gendeg train restorer``, written out step by step.

One loop for one CPU, one GPU, or many GPUs and machines: Hugging Face ``accelerate`` picks
the device(s), wraps the network for data parallelism when launched with ``accelerate
launch`` / ``torchrun``, and does mixed precision. Per optimizer step::

    for each of grad_accum micro-batches:        # lq, gt: [B,3,crop,crop] in 0..1
        out = net(lq)                            # [B,3,crop,crop], ≈0..1 (not clamped)
        terms = {name: weight·Σ loss(out, gt, lq)}
        backward(Σ terms / grad_accum)
    clip the gradient norm, AdamW step, EMA update, learning rate for the next step

Everything random is a function of (seed, step): data (see :mod:`.data`), loss noise
(``LossBatch.generator``) and the global RNG (reseeded every step), so a run killed at any
moment and resumed from its last checkpoint ends with the same weights as an uninterrupted
run on the same machine.

Outputs in ``<out>/``: ``<name>.safetensors`` (EMA weights, spandrel layout, metadata),
``checkpoints/step_N.pt``, ``metrics.csv`` (losses, learning rate, steps/s), ``val.csv``
(PSNR/SSIM/LPIPS of the EMA network), ``val/step_N.png`` (rows: degraded | restored | truth),
``config.yaml`` (the resolved config) and ``tensorboard/`` when TensorBoard is installed.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from ..errors import GenDegError, InputError, WeightsError
from ..io import atomic_write_bytes
from .archs import build_model, get_arch
from .checkpoint import export_model, latest_checkpoint, list_checkpoints, save_checkpoint
from .config import RestorerConfig
from .data import StepSampler, TrainData, build_data
from .data.seeding import STREAM_INIT, STREAM_LOSS, derive_seed, generator
from .ema import EMA
from .schedule import lr_at
from .validate import Validator

log = logging.getLogger("gendeg")


@dataclass
class TrainResult:
    out_dir: Path
    model_path: Path
    step: int
    last_losses: dict[str, float] = field(default_factory=dict)
    last_val: dict[str, float] = field(default_factory=dict)
    main_process: bool = True


# ---------------------------------------------------------------------------------------
# set-up helpers


def make_accelerator(device: str | None, mixed_precision: str):
    """An ``accelerate.Accelerator`` on ``device`` (``cpu``, ``cuda``, ``cuda:N``, ``mps``; None = best available).

    Under ``accelerate launch`` / ``torchrun`` each process gets its own GPU from the launcher.
    """
    try:
        from accelerate import Accelerator
    except ImportError as exc:  # pragma: no cover - accelerate is a dependency of training
        raise InputError("training needs Hugging Face accelerate: pip install 'comfyui-gendeg[train]'") from exc
    from ..device import parse_device

    dev = parse_device(device)
    if dev.type == "cuda" and dev.index is not None and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        torch.cuda.set_device(dev.index)
    cpu = dev.type == "cpu"
    if mixed_precision == "fp16" and dev.type != "cuda":
        raise InputError("train.mixed_precision fp16 needs a CUDA GPU; use bf16 or no on this device")
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # a second run in one process may use other settings (the process group stays)
    return Accelerator(mixed_precision=mixed_precision, cpu=cpu)


def prepare_out_dir(out: Path, resume: bool) -> None:
    ckpts = list_checkpoints(out / "checkpoints")
    if ckpts and not resume:
        raise InputError(f"{out} already holds a run (checkpoint at step {ckpts[-1][0]}); pass --resume to continue it, "
                         "or choose another --out")
    out.mkdir(parents=True, exist_ok=True)


def load_pretrained(model: torch.nn.Module, path: str) -> None:
    """Initialise ``model`` strictly from ``path`` (safetensors, or a pickle read with an allow-list)."""
    from ..weights.safe_load import load_state_dict

    sd = load_state_dict(path)
    result = model.load_state_dict(sd, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(
            f"{path}: does not fit the configured network ({len(result.missing_keys)} missing keys, e.g. "
            f"{result.missing_keys[:2]}; {len(result.unexpected_keys)} unexpected, e.g. {result.unexpected_keys[:2]}); "
            "check model.arch and model.options against the file"
        )


def build_losses(spec: Mapping[str, Any], ctx: Any) -> dict[str, tuple[float, torch.nn.Module]]:
    """``{name: (weight, loss module)}`` for every loss with a non-zero weight (``ctx``: a ``LossContext``)."""
    from .losses import build_loss

    out = {}
    for name, options in spec.items():
        opts = dict(options or {})
        weight = opts.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise InputError(f"config: loss.{name}.weight must be a number >= 0, got {weight!r}")
        if weight == 0:
            continue
        module = build_loss(name, opts, ctx)
        out[name] = (float(weight), module.to(ctx.device))
    if not out:
        raise InputError("config: every loss has weight 0; give at least one a positive weight")
    return out


def worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch of samples: tensors stacked (``gt``, ``lq``, ``positive_lq`` …), numbers as one float tensor
    (``mu``), anything else (types, prompts) as a list."""
    out: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if torch.is_tensor(values[0]):
            out[key] = torch.stack(values)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = torch.tensor([float(v) for v in values])
        else:
            out[key] = values
    return out


def make_loader(dataset: torch.utils.data.Dataset, start_step: int, config: Any, rank: int, world: int,
                ) -> Iterator[dict[str, Any]]:
    sampler = StepSampler(start_step, config.train.batch_size, config.train.grad_accum, rank, world)
    workers = config.data.workers
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=config.train.batch_size, sampler=sampler, num_workers=workers, collate_fn=collate,
        worker_init_fn=worker_init if workers else None, persistent_workers=bool(workers),
        prefetch_factor=4 if workers else None,
    )
    return iter(loader)


class CsvLog:
    """Rows appended to a CSV; on resume, rows logged after the checkpoint's step are dropped first."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        self.fields: list[str] | None = None
        if path.is_file():
            with path.open(newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
                fields = list(rows[0].keys()) if rows else None
            if resume_step is None:
                rows = []
            kept = [r for r in rows if int(r["step"]) <= (resume_step or 0)]
            if kept and fields:
                self.fields = fields
                self._rewrite(kept)
            else:
                path.unlink()

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        import io

        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.fields)
        w.writeheader()
        w.writerows(rows)
        atomic_write_bytes(self.path, buf.getvalue().encode("utf-8"))

    def write(self, row: Mapping[str, Any]) -> None:
        new = self.fields is None or any(k not in self.fields for k in row)
        if new and self.fields is not None:  # a new column (e.g. LPIPS became available): rewrite with it
            with self.path.open(newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
            self.fields = self.fields + [k for k in row if k not in self.fields]
            self._rewrite(rows)
        if self.fields is None:
            self.fields = list(row)
            with self.path.open("w", newline="", encoding="utf-8") as fh:
                csv.DictWriter(fh, fieldnames=self.fields).writeheader()
        with self.path.open("a", newline="", encoding="utf-8") as fh:
            csv.DictWriter(fh, fieldnames=self.fields).writerow({k: _fmt(row.get(k, "")) for k in self.fields})


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


def tensorboard_writer(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # noqa: BLE001 - optional: tensorboard not installed
        return None
    return SummaryWriter(str(out / "tensorboard"))


@contextlib.contextmanager
def stop_on_sigint() -> Iterator[Callable[[], bool]]:
    """A first Ctrl-C asks the loop to stop after the current step (it then saves); a second one aborts."""
    asked = {"stop": False}
    if os.name != "posix" or not _main_thread():
        yield lambda: False
        return

    def handler(signum: int, frame: Any) -> None:
        if asked["stop"]:
            raise KeyboardInterrupt
        asked["stop"] = True
        log.warning("[GenDeg] stopping after this step (Ctrl-C again to abort without saving)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: asked["stop"]
    finally:
        signal.signal(signal.SIGINT, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# ---------------------------------------------------------------------------------------
# what is trained: a task


@dataclass
class StepContext:
    """What a task's ``loss_terms`` gets besides the batch."""

    step: int  # optimizer step (0-based)
    micro: int  # micro-batch within the step (0..grad_accum-1)
    generator: torch.Generator  # on the device, seeded from (seed, step, rank, micro): draw all randomness from it
    autocast: Callable[[], contextlib.AbstractContextManager]  # the accelerator's mixed-precision context


class TrainTask:
    """What a training command trains: the network, its objective, how it restores for validation, the export.

    The loop (:func:`run_training`) owns devices, precision, accumulation, the optimizer, EMA,
    checkpoints, resume and logging; a task only says what one micro-batch costs.
    """

    name = "task"
    #: validation images are padded to a multiple of this before restoring
    multiple = 1
    #: the data pipeline adds ``positive_lq`` (another crop of each degraded image) to every sample
    positive_crops = False

    def build_network(self) -> torch.nn.Module:
        raise NotImplementedError

    def setup(self, device: torch.device) -> None:
        """Load frozen helpers (loss networks) on the training device."""

    def loss_terms(self, model: torch.nn.Module, batch: Mapping[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        """Named, weighted scalar terms for one micro-batch (their sum is minimised)."""
        raise NotImplementedError

    @torch.no_grad()
    def restore(self, net: torch.nn.Module, lq: torch.Tensor) -> torch.Tensor:
        """``[1,3,H,W]`` 0..1 -> restored ``[1,3,H,W]`` 0..1, for validation (default: one forward pass)."""
        from ..image import crop_to, pad_to_multiple

        x, size = pad_to_multiple(lq, self.multiple)
        return crop_to(net(x), size).clamp(0, 1)

    def export(self, path: Path, weights: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> Path:
        """Write the trained weights (the EMA) where the pack's loaders read them."""
        return export_model(path, weights, metadata)

    def metadata(self) -> dict[str, Any]:
        return {}

    def param_groups(self, model: torch.nn.Module) -> list[dict[str, Any]]:
        """What the optimizer trains: AdamW parameter groups; ``lr_scale`` (default 1) multiplies the
        scheduled learning rate of a group. Default: every parameter that requires a gradient."""
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    def ema_keys(self, model: torch.nn.Module, trained: list[str]) -> list[str]:
        """``state_dict`` keys the EMA averages (``trained``: every entry that is not a frozen parameter);
        the others are exported as trained."""
        return trained

    def validator(self, samples: list[dict[str, Any]], folder: Path, models_dir: Path | None) -> Any:
        """What validates: an object with ``run(net, weights, step, device) -> dict`` (``weights``: the EMA of
        the trained entries), or None. Default: restore the held-out pairs and score them."""
        return Validator(samples, folder, self.restore, models_dir=models_dir) if samples else None


def trained_keys(net: torch.nn.Module) -> list[str]:
    """``state_dict`` keys a run trains, saves and exports: all but frozen parameters (e.g. a VAE, a LoRA's base)."""
    frozen = {name for name, p in net.named_parameters() if not p.requires_grad}
    return [k for k in net.state_dict() if k not in frozen]


class RestorerTask(TrainTask):
    """A feed-forward restorer ``out = net(lq)`` under the configured losses."""

    name = "restorer"

    def __init__(self, config: RestorerConfig, models_dir: Path) -> None:
        self.config, self.models_dir = config, models_dir
        self.multiple = get_arch(config.model.arch).multiple
        self.options: dict[str, Any] = {}
        self.losses: dict[str, tuple[float, torch.nn.Module]] = {}

    def build_network(self) -> torch.nn.Module:
        model, self.options = build_model(self.config.model.arch, self.config.model.options,
                                          derive_seed(self.config.seed, STREAM_INIT))
        if self.config.model.pretrained:
            load_pretrained(model, self.config.model.pretrained)
        return model

    def setup(self, device: torch.device) -> None:
        from .losses import LossContext

        ctx = LossContext(device=device, models_dir=self.models_dir, mixed_precision=self.config.train.mixed_precision)
        self.losses = build_losses(self.config.loss, ctx)

    def loss_terms(self, model: torch.nn.Module, batch: Mapping[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        from .losses import LossBatch

        lq, gt = batch["lq"], batch["gt"]  # [B,3,h,w] 0..1
        with ctx.autocast():
            restored = model(lq)  # [B,3,h,w], ≈0..1 (not clamped)
        lb = LossBatch(out=restored.float(), gt=gt, lq=lq, step=ctx.step, generator=ctx.generator)
        terms: dict[str, torch.Tensor] = {}  # each loss runs its frozen networks at its own precision
        for weight, loss_fn in self.losses.values():
            for term, value in loss_fn(lb).items():
                terms[term] = weight * value.float()
        return terms

    def metadata(self) -> dict[str, Any]:
        return {"gendeg.arch": self.config.model.arch,
                "gendeg.training": {"arch": self.config.model.arch, "options": self.options}}


# ---------------------------------------------------------------------------------------
# the loop


def restorer_task(config: RestorerConfig, models_dir: str | Path | None = None) -> TrainTask:
    """The task that trains ``config.model.arch``: the plain restorer objective, or the architecture's own."""
    task_class = get_arch(config.model.arch).task or RestorerTask  # an architecture may bring its own objective
    return task_class(config, Path(models_dir or os.environ.get("GENDEG_MODELS_DIR", "models")))


def restorer_data(config: RestorerConfig) -> TrainData:
    """The training data of ``config`` (with second crops when the architecture's objective needs them)."""
    return build_data(config.data, config.seed, positive=restorer_task(config).positive_crops)


def train_restorer(
    config: RestorerConfig,
    *,
    device: str | None = None,
    resume: bool = False,
    models_dir: str | Path | None = None,
    progress: bool = True,
    data: TrainData | None = None,
) -> TrainResult:
    """Train the restorer described by ``config``; returns where the model went and the last figures."""
    task = restorer_task(config, models_dir)
    data = data or restorer_data(config)
    return run_training(config, task, data, device=device, resume=resume, progress=progress, models_dir=task.models_dir)


def run_training(
    config: Any,
    task: TrainTask,
    data: TrainData,
    *,
    device: str | None = None,
    resume: bool = False,
    progress: bool = True,
    models_dir: Path | None = None,
) -> TrainResult:
    """Train ``task`` on ``data`` with the loop settings of ``config`` (its ``name``, ``seed``, ``out``,
    ``optim``, ``schedule``, ``train`` sections and ``fingerprint()``)."""
    out = config.out_dir()
    accelerator = make_accelerator(device, config.train.mixed_precision)
    main = accelerator.is_main_process
    rank, world = accelerator.process_index, accelerator.num_processes
    if main:
        prepare_out_dir(out, resume)
    accelerator.wait_for_everyone()

    # -- network, frozen helpers, optimizer ------------------------------------------
    model = task.build_network()
    task.setup(accelerator.device)
    keys = trained_keys(model)  # what checkpoints hold and the export gets
    groups = [{**g, "lr_scale": float(g.get("lr_scale", 1.0))} for g in task.param_groups(model)]
    for g in groups:
        g["lr"] = config.optim.lr * g["lr_scale"]
    optimizer = torch.optim.AdamW(groups, lr=config.optim.lr, betas=tuple(config.optim.betas),
                                  weight_decay=config.optim.weight_decay, eps=config.optim.eps)

    # -- resume -----------------------------------------------------------------------
    start_step = 0
    state: dict[str, Any] = {}
    fingerprint = config.fingerprint()
    if resume:
        found = latest_checkpoint(out / "checkpoints")
        if found is None:
            log.info("[GenDeg] --resume: no checkpoint in %s yet; starting from step 0", out / "checkpoints")
        else:
            start_step, state = found
            if state.get("fingerprint") != fingerprint:
                raise InputError(f"{out}: the config changed since the checkpoint at step {start_step} (model, data, loss, "
                                 "optimizer or seed); resuming would not continue the same run. Use the config in "
                                 f"{out / 'config.yaml'} or another --out")
            if set(state["model"]) != set(keys):
                raise InputError(f"{out}: the checkpoint at step {start_step} holds other tensors than this network "
                                 "trains; it was written by another version. Start a new run (another --out)")
            model.load_state_dict(state["model"], strict=False)
            optimizer.load_state_dict(state["optimizer"])
            log.info("[GenDeg] resuming %s at step %d", out, start_step)
    if main:
        atomic_write_bytes(out / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False).encode("utf-8"))

    if config.train.compile:
        model = torch.compile(model)
    model, optimizer = accelerator.prepare(model, optimizer)
    if accelerator.scaler is not None and "scaler" in state:
        accelerator.scaler.load_state_dict(state["scaler"])
    net = accelerator.unwrap_model(model)
    net = getattr(net, "_orig_mod", net)  # the module torch.compile wrapped
    ema = EMA(net, config.train.ema_decay, config.train.ema_warmup, keys=task.ema_keys(net, keys))  # on the device
    if "ema" in state:
        ema.load_state_dict(state["ema"])

    def trained_state() -> dict[str, torch.Tensor]:
        sd = net.state_dict()
        return {k: sd[k] for k in keys}

    max_steps = config.train.max_steps
    metrics = CsvLog(out / "metrics.csv", start_step if resume else None) if main else None
    val_log = CsvLog(out / "val.csv", start_step if resume else None) if main else None
    tb = tensorboard_writer(out) if main else None
    validator = task.validator(data.val, out / "val", models_dir) if main else None
    model_path = out / f"{config.name}.safetensors"
    metadata = task.metadata()
    metadata["gendeg.training"] = {**metadata.get("gendeg.training", {}), "task": task.name, "config": config.to_dict(),
                                   "data": data.summary, "fingerprint": fingerprint}

    def save(step: int) -> None:
        """Checkpoint after ``step`` optimizer steps, and export the EMA network."""
        if main:
            state = {"step": step, "model": trained_state(), "optimizer": optimizer.state_dict(),
                     "ema": ema.state_dict(), "fingerprint": fingerprint}
            if accelerator.scaler is not None:
                state["scaler"] = accelerator.scaler.state_dict()
            save_checkpoint(out / "checkpoints", step, state, config.train.keep_checkpoints)
            task.export(model_path, ema.weights(trained_state()), {**metadata, "gendeg.steps": step})
        accelerator.wait_for_everyone()

    def validate(step: int) -> dict[str, float]:
        if not main or validator is None:
            return {}
        row = validator.run(net, ema.weights(trained_state()), step, accelerator.device)
        val_log.write({"step": step, **row})
        if tb is not None:
            for k, v in row.items():
                tb.add_scalar(f"val/{k}", v, step)
        return row

    # -- the loop ---------------------------------------------------------------------
    batches = make_loader(data.train, start_step, config, rank, world)
    accum = config.train.grad_accum
    bar = None
    if main and progress and os.environ.get("GENDEG_NO_PROGRESS") != "1":
        from tqdm.auto import tqdm

        bar = tqdm(total=max_steps, initial=start_step, desc=f"train {config.name}", unit="step", dynamic_ncols=True)
    sums: dict[str, float] = {}
    n_sums, t_last, last_losses, last_val = 0, time.perf_counter(), {}, {}
    step = start_step
    model.train()
    with stop_on_sigint() as stop_requested:
        while step < max_steps:
            lr = lr_at(step, config.optim.lr, config.schedule, max_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            torch.manual_seed(derive_seed(config.seed, STREAM_INIT, step, rank))  # dropout / drop-path

            for micro in range(accum):
                batch = next(batches)
                batch = {k: v.to(accelerator.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
                ctx = StepContext(step, micro, generator(config.seed, STREAM_LOSS, step, rank, micro, device=accelerator.device),
                                  accelerator.autocast)
                sync = micro == accum - 1
                no_sync = accelerator.no_sync(model) if (world > 1 and not sync) else contextlib.nullcontext()
                with no_sync:
                    terms = task.loss_terms(model, batch, ctx)
                    loss = sum(terms.values())
                    if not torch.isfinite(loss):
                        raise GenDegError(f"the loss became {float(loss)} at step {step} ({ {k: float(v) for k, v in terms.items()} }); "
                                          "lower optim.lr, set train.clip_grad, or check the data")
                    accelerator.backward(loss / accum)
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach()) / accum
                sums["loss"] = sums.get("loss", 0.0) + float(loss.detach()) / accum

            if config.train.clip_grad is not None:
                accelerator.clip_grad_norm_(model.parameters(), config.train.clip_grad)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            ema.update(net, step)
            step += 1
            n_sums += 1

            if bar is not None:
                bar.update(1)
            if step % config.train.log_every == 0 or step == max_steps:
                now = time.perf_counter()
                names = sorted(sums)
                means = torch.tensor([sums[k] / n_sums for k in names], device=accelerator.device)
                if world > 1:  # the mean over every process's batches
                    means = accelerator.reduce(means, reduction="mean")
                last_losses = dict(zip(names, means.tolist(), strict=True))
                if main:
                    row = {"step": step, "lr": lr, **last_losses, "steps_per_s": n_sums / max(now - t_last, 1e-9)}
                    metrics.write(row)
                    if tb is not None:
                        for k, v in row.items():
                            if k != "step":
                                tb.add_scalar(f"train/{k}", v, step)
                    if bar is not None:
                        bar.set_postfix(loss=f"{last_losses['loss']:.4g}", lr=f"{lr:.2g}")
                sums, n_sums, t_last = {}, 0, now
            stopping = stop_requested()
            if step % config.train.save_every == 0 or step == max_steps or stopping:
                save(step)
            if config.train.val_every and step % config.train.val_every == 0 and step != max_steps:
                last_val = validate(step) or last_val
            if stopping:
                break
    if bar is not None:
        bar.close()
    if step == max_steps:
        last_val = validate(step) or last_val
    if tb is not None:
        tb.close()
    if main:
        (out / "summary.json").write_text(json.dumps({"step": step, "model": str(model_path), "losses": last_losses,
                                                      "val": last_val}, indent=2), encoding="utf-8")
    accelerator.wait_for_everyone()
    if step < max_steps:
        raise KeyboardInterrupt(f"stopped at step {step}; the checkpoint is saved, continue with --resume")
    return TrainResult(out, model_path, step, last_losses, last_val, main)
