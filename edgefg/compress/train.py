"""The one small training loop used by pruning recovery, CLCA and ILA fine-tuning.

AdamW or SGD, linear warm-up + cosine schedule, timm's standard augmentation, optional Hinton
distillation from a teacher (KL at temperature T, scaled by T², mixed with cross-entropy), a
progress bar, and a checkpoint (safetensors + JSON, never pickle) after every epoch and every
``checkpoint_every`` steps. A run that finds a checkpoint of the same run resumes from it: the data
order of each epoch is a fixed function of (seed, epoch), so resuming mid-epoch skips exactly the
batches already seen.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgefg.calibration.dataset import Sample
from edgefg.errors import DataError, UnsupportedError
from edgefg.manifest import Preprocess

log = logging.getLogger(__name__)
STATE_NAME, MODEL_NAME, OPTIM_NAME = "state.json", "model.safetensors", "optimizer.safetensors"


@dataclass
class TrainConfig:
    epochs: int = 1
    lr: float = 1e-3
    optimizer: str = "adamw"  # adamw | sgd
    weight_decay: float = 0.05
    momentum: float = 0.9  # sgd only
    batch_size: int = 32
    warmup_steps: int = 0
    max_steps: int | None = None  # stop after this many optimizer steps in total (smoke runs, tests)
    kd_temperature: float = 4.0
    kd_alpha: float = 0.7  # loss = alpha·T²·KL(teacher‖student) + (1-alpha)·CE, when a teacher is given
    label_smoothing: float = 0.0
    augment: bool = True
    freeze_bn: bool = True  # BatchNorm of the frozen/pretrained parts keeps its running statistics (see train())
    aug_scale: tuple[float, float] = (0.35, 1.0)
    num_workers: int = 0
    threads: int | None = None
    seed: int = 0
    checkpoint_dir: Path | None = None
    checkpoint_every: int = 0  # also checkpoint every N steps (0: only at epoch ends)
    device: str = "cpu"  # cpu | cuda | cuda:N — where the forward/backward passes run (data loading stays on the CPU)
    amp: bool = False  # bfloat16 autocast on `device` (see training_precision(): CUDA, or CPUs with native bf16)
    channels_last: bool = True  # NHWC for 4-D weights and inputs during training: faster convolutions (oneDNN, cuDNN)
    data_on_device: bool = False  # decode the images once, augment with torch on `device` (compress/device_data.py): GPUs

    def identity(self) -> str:
        """What must match for a checkpoint to be resumed (not max_steps / paths / threads)."""
        keep = {k: v for k, v in asdict(self).items() if k not in ("max_steps", "checkpoint_dir", "checkpoint_every", "threads", "num_workers", "device", "amp", "channels_last")}
        return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class TrainResult:
    steps: int
    epochs_done: int
    resumed_from_step: int
    history: list[dict[str, Any]] = field(default_factory=list)
    trainable_params: int = 0


def kd_loss(student, teacher, labels, temperature: float, alpha: float, label_smoothing: float = 0.0):
    """Hinton distillation: alpha·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1-alpha)·CE(s, y)."""
    import torch.nn.functional as F

    t = temperature
    kl = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1), reduction="batchmean", log_target=True)
    ce = F.cross_entropy(student, labels, label_smoothing=label_smoothing)
    return alpha * (t * t) * kl + (1.0 - alpha) * ce


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _make_optimizer(params, cfg: TrainConfig):
    import torch

    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    raise UnsupportedError(f"unknown optimizer '{cfg.optimizer}'", "use adamw or sgd")


# -- checkpoints (safetensors for tensors, JSON for the rest) ----------------------------------


def _save_checkpoint(folder: Path, model, optimizer, state: dict[str, Any]) -> None:
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(tensors, str(folder / (MODEL_NAME + ".tmp")))
    opt = optimizer.state_dict()
    opt_tensors, opt_scalars = {}, {}
    for idx, st in opt["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                opt_tensors[f"{idx}.{key}"] = val.detach().cpu().contiguous().clone()
            else:
                opt_scalars[f"{idx}.{key}"] = val
    save_file(opt_tensors or {"_empty": torch.zeros(1)}, str(folder / (OPTIM_NAME + ".tmp")))
    state = {**state, "optimizer_scalars": opt_scalars, "param_groups": opt["param_groups"]}
    (folder / (STATE_NAME + ".tmp")).write_text(json.dumps(state, indent=1, default=str), encoding="utf-8")
    for name in (MODEL_NAME, OPTIM_NAME, STATE_NAME):  # state.json last: it marks a complete checkpoint
        os.replace(folder / (name + ".tmp"), folder / name)


def load_checkpoint(folder: Path, model, optimizer=None) -> dict[str, Any] | None:
    """Load a checkpoint written by :func:`train` into ``model`` (and ``optimizer``); return its state."""
    from safetensors.torch import load_file

    if not (folder / STATE_NAME).is_file():
        return None
    state = json.loads((folder / STATE_NAME).read_text(encoding="utf-8"))
    missing, unexpected = model.load_state_dict(load_file(str(folder / MODEL_NAME)), strict=False)
    if missing or unexpected:
        raise DataError(f"checkpoint in '{folder}' does not fit the model ({len(missing)} missing, {len(unexpected)} unexpected keys)",
                        "delete the checkpoint folder to start over")
    if optimizer is not None:
        tensors = load_file(str(folder / OPTIM_NAME))
        st: dict[int, dict[str, Any]] = {}
        for key, val in {**tensors, **state.get("optimizer_scalars", {})}.items():
            if key == "_empty":
                continue
            idx, name = key.split(".", 1)
            st.setdefault(int(idx), {})[name] = val
        optimizer.load_state_dict({"state": st, "param_groups": state["param_groups"]})
    return state


def _freeze_bn(model, trainable: Sequence[str] | None) -> None:
    """Put BatchNorm layers outside the ``trainable`` prefixes in eval mode: their affine weights
    still train, but they normalise with their running statistics. Small-batch fine-tuning needs
    this, and BN-folded models (running stats 0/1, e.g. dequantized TFLite weights) produce garbage
    with batch statistics — mobilenetv2_cub100 scores 0 % on its own training images in train mode.
    A model may list freshly initialised parts in ``fresh_prefixes``: their BatchNorm always trains."""
    import torch

    fresh = [*(trainable or []), *getattr(model, "fresh_prefixes", ())]  # new layers (adapters, CLA head) learn their statistics
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            if any((name + ".").startswith(t) for t in fresh):
                continue
            mod.eval()


def resolve_device(name: str):
    """``cpu``, ``cuda`` or ``cuda:N`` → a torch.device, with a clear error when CUDA is absent."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UnsupportedError(f"unknown training device '{name}'", "use --device cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UnsupportedError(f"training device '{name}' was asked for but this torch sees no CUDA GPU",
                               "drop --device (trains on the CPU) or install a CUDA build of torch")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UnsupportedError(f"training device '{name}' does not exist: {torch.cuda.device_count()} CUDA GPU(s) visible", "use --device cuda:0")
    if device.type not in ("cpu", "cuda"):
        raise UnsupportedError(f"training on '{device.type}' is not supported", "use --device cpu, cuda or cuda:N")
    return device


PRECISIONS = ("auto", "bf16", "fp32")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bfloat16 matmuls/convolutions natively (AVX512-BF16 or AMX), as oneDNN sees it."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def training_precision(precision: str, device: str) -> bool:
    """``--train-precision`` → whether to train under bfloat16 autocast. ``auto``: on CUDA yes, on the CPU
    no (the figures of a CPU run stay comparable across CPUs); ``bf16`` on a CPU without native bf16 is refused
    (emulated bf16 is slower than float32)."""
    if precision not in PRECISIONS:
        raise UnsupportedError(f"unknown training precision '{precision}'", "use --train-precision auto, bf16 or fp32")
    on_cuda = device.startswith("cuda")
    if precision == "fp32":
        return False
    if precision == "auto":
        return on_cuda
    if not on_cuda and not cpu_has_native_bf16():
        raise UnsupportedError("--train-precision bf16 was asked for on a CPU without native bfloat16 (AVX512-BF16 or AMX): "
                               "it would run emulated, slower than float32", "use --train-precision fp32 (or auto) on this machine")
    return True


def augmentation_label(cfg: TrainConfig) -> str:
    if not cfg.augment:
        return "none (evaluation preprocessing)"
    if cfg.data_on_device:
        return f"torch on {cfg.device} over images decoded once (random resized crop, flip, colour jitter)"
    return "timm train transform (random resized crop, flip, colour jitter)"


def _device_batches(cached, spec: Preprocess, order: Sequence[int], batch_size: int, skip: int, cfg: TrainConfig, generator):
    """(x, y) batches drawn from images decoded once (see compress/device_data.py), augmented on their device."""
    import torch

    from edgefg.compress.device_data import augment, centre

    n = len(order)
    starts = [i for i in range(0, n, batch_size) if i + batch_size <= n or n <= batch_size][skip:]  # no ragged last batch (BatchNorm)
    index = torch.as_tensor(list(order), device=cached.images.device)

    def gen():
        for i in starts:
            idx = index[i : i + batch_size]
            x = cached.images[idx]
            yield (augment(x, spec, generator, scale=cfg.aug_scale) if cfg.augment else centre(x, spec)), cached.labels[idx]

    return gen(), len(starts)


def _batches(dataset, order: Sequence[int], batch_size: int, skip: int, num_workers: int, pin: bool = False) -> Iterable:
    from torch.utils.data import DataLoader

    batches = [list(order[i : i + batch_size]) for i in range(0, len(order), batch_size)]
    batches = [b for b in batches if len(b) == batch_size or len(batches) == 1][skip:]  # drop a ragged last batch (BatchNorm)
    return DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, pin_memory=pin), len(batches)


def train(
    model,
    samples: Sequence[Sample],
    spec: Preprocess,
    cfg: TrainConfig,
    teacher=None,
    trainable: Sequence[str] | None = None,
    description: str = "training",
    student_size: tuple[int, int] | None = None,
    on_epoch: Callable[[int, int, Callable], bool] | None = None,
) -> TrainResult:
    """Fine-tune ``model`` in place on labelled ``samples``. ``trainable``: parameter-name prefixes
    to train (all others frozen); ``teacher``: a model to distil from. ``student_size``: the student
    sees each augmented ``spec``-sized batch down-sampled to this size (antialiased), the teacher
    the full-resolution batch (input down-sampling with a full-resolution teacher). ``on_epoch(epoch,
    epochs, predict)`` is called before the first epoch (0) and after each one with a function from
    preprocessed images to the student's logits; True stops training there (early stopping)."""
    import torch
    import torch.nn.functional as F

    from edgefg.compress.data import ImageDataset
    from edgefg.progress import track

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    home = next(model.parameters()).device
    teacher_home = next(teacher.parameters()).device if teacher is not None else None
    model.to(device)
    if teacher is not None:
        teacher.to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.amp else contextlib.nullcontext()
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(memory_format=layout)  # only 4-D tensors change; restored to the default layout below
    if teacher is not None:
        teacher.to(memory_format=layout)
    if cfg.data_on_device:
        from edgefg.compress.device_data import cache_images

        dataset = cache_images(samples, spec, device, workers=max(1, cfg.num_workers or os.cpu_count() or 1))
    else:
        dataset = ImageDataset(samples, spec, augment=cfg.augment, scale=cfg.aug_scale)
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(trainable is None or any(name.startswith(t) for t in trainable))
        if p.requires_grad:
            params.append(p)
    if not params:
        raise UnsupportedError("nothing to train: no parameter matches the trainable set")
    optimizer = _make_optimizer(params, cfg)
    per_epoch = max(1, len(dataset) // cfg.batch_size) if len(dataset) >= cfg.batch_size else 1
    total = cfg.epochs * per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    step, epoch, history, resumed = 0, 0, [], 0
    ckpt = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
    if ckpt is not None and (ckpt / STATE_NAME).is_file():
        state = json.loads((ckpt / STATE_NAME).read_text(encoding="utf-8"))
        if state.get("identity") == cfg.identity():
            load_checkpoint(ckpt, model, optimizer)
            step, history, resumed = int(state["step"]), list(state.get("history", [])), int(state["step"])
            log.info("resuming %s from step %d (checkpoint %s)", description, step, ckpt)
        else:
            log.warning("checkpoint in '%s' is from a different run configuration: starting over", ckpt)
    teacher_grad = [p.requires_grad for p in teacher.parameters()] if teacher is not None else []
    if teacher is not None:
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    n_trainable = sum(p.numel() for p in params)

    def save(state_epoch: int) -> None:
        if ckpt is not None:
            _save_checkpoint(ckpt, model, optimizer, {"identity": cfg.identity(), "step": step, "epoch": state_epoch, "history": history, "config": asdict(cfg)})

    def predict(x: np.ndarray) -> np.ndarray:
        was = model.training
        model.eval()
        with torch.no_grad(), autocast:
            t = torch.from_numpy(np.ascontiguousarray(x)).to(device).contiguous(memory_format=layout)
            if student_size is not None:
                t = F.interpolate(t, size=student_size, mode="bilinear", antialias=True, align_corners=False)
            out = model(t).float().cpu().numpy()
        model.train(was)
        return out

    stopped = False
    if on_epoch is not None and step == 0:
        on_epoch(0, cfg.epochs, predict)
    while step < total and not stopped:
        epoch, in_epoch = divmod(step, per_epoch)
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch)).tolist()
        torch.manual_seed(cfg.seed * 1000 + epoch * 7919 + in_epoch)  # augmentation/dropout of the resumed part
        random.seed(cfg.seed * 1000 + epoch * 7919 + in_epoch)
        if cfg.data_on_device:
            gen = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + epoch * 7919 + in_epoch)
            loader, n_batches = _device_batches(dataset, spec, order, cfg.batch_size, in_epoch, cfg, gen)
        else:
            loader, n_batches = _batches(dataset, order, cfg.batch_size, in_epoch, cfg.num_workers, pin=device.type == "cuda")
        model.train()
        if cfg.freeze_bn:
            _freeze_bn(model, trainable)
        losses, correct, seen = [], 0, 0
        for x, y in track(loader, f"{description} epoch {epoch + 1}/{cfg.epochs}", n_batches):
            for g in optimizer.param_groups:
                g["lr"] = cfg.lr * _lr_factor(step, total, cfg.warmup_steps)
            x, y = x.to(device, non_blocking=True).contiguous(memory_format=layout), y.to(device, non_blocking=True)
            xs = x if student_size is None else F.interpolate(x, size=tuple(student_size), mode="bilinear", antialias=True, align_corners=False)
            with autocast:
                out = model(xs)
                if teacher is not None:
                    with torch.no_grad():
                        t_out = teacher(x)
                    loss = kd_loss(out.float(), t_out.float(), y, cfg.kd_temperature, cfg.kd_alpha, cfg.label_smoothing)
                else:
                    loss = F.cross_entropy(out.float(), y, label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            losses.append(loss.detach().item())
            correct += int((out.argmax(1) == y).sum())
            seen += len(y)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total:
                save(epoch)
            if step >= total:
                break
        history.append({"epoch": epoch + 1, "steps": step, "loss": float(sum(losses) / max(1, len(losses))), "train_top1": correct / max(1, seen)})
        log.info("%s epoch %d: loss %.4f, train top-1 %.3f", description, epoch + 1, history[-1]["loss"], history[-1]["train_top1"])
        save(epoch + 1)
        if on_epoch is not None and step < total and step % per_epoch == 0 and on_epoch(epoch + 1, cfg.epochs, predict):
            stopped = True
            history[-1]["stopped_early"] = True
            log.info("%s: stopped early after epoch %d", description, epoch + 1)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    model.to(home, memory_format=torch.contiguous_format)  # exports and safetensors expect the default layout
    if teacher is not None:  # the caller's teacher comes back as it was given (a copy of it may be trained next)
        teacher.to(teacher_home, memory_format=torch.contiguous_format)
        for p, flag in zip(teacher.parameters(), teacher_grad):
            p.requires_grad_(flag)
    return TrainResult(steps=step, epochs_done=math.ceil(step / per_epoch), resumed_from_step=resumed, history=history, trainable_params=n_trainable)
