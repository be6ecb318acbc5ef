"""The options of one compress run (:func:`edgefg.compress.api.compress`), apart from the code that reads them.

The compress loop (``api.py``) and the steps (``steps.py``) both read these; keeping them here lets the steps
import them without importing the loop.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefg.compress import ILA_DEFAULT_AT


@dataclass
class CompressOptions:
    recipe: str = "int8"  # built-in name or a .toml/.yaml recipe file
    data: Path | None = None  # calibration + training images (ImageFolder or flat)
    val_data: Path | None = None  # evaluation images; defaults to ``data``
    calib_size: int = 300
    seed: int = 0
    force: bool = False
    latency_iters: int = 30
    batch_size: int = 8  # evaluation batch
    val_size: int | None = None  # evaluate on a stratified subset of this many validation images
    eval_backend: str = "auto"  # auto (OpenVINO when installed) | onnxruntime | openvino
    # INT8 and its budget (applied to the recipe's int8 step)
    max_drop: float | None = None  # mean top-1 drop, points (NNCF accuracy control)
    max_class_drop: float | None = None  # per-class drop, points, counted only when significant
    class_alpha: float = 0.05  # Holm-corrected sign-test level for "significant"
    class_gate: str = "evidence"  # evidence | points (every drop over max_class_drop fails)
    early_stop_drop: float | None = None  # stop a distillation whose top-1 drop cannot come within this many points
    smooth_quant: float | None = None
    ignored: list[str] = field(default_factory=list)  # ONNX node names kept in float
    # agreement-driven INT8: NNCF's accuracy control by top-1 agreement with FP32 on unlabelled images
    agreement_data: Path | None = None
    min_agreement: float | None = None  # default 0.99 when agreement_data is given
    agreement_size: int | None = None  # images read from agreement_data (default 2000)
    max_reverts: int | None = None  # most layers reverted to float (NNCF iterations; per-class loop)
    bias_correction: str | None = None  # fast (default) | full | off
    # input down-sampling (a smaller square input, distilled from the full-resolution model)
    input_size: int | None = None
    # structured pruning + distillation
    prune: float | None = None
    prune_rounds: int = 1  # prune in this many rounds, distilling after each (--epochs: the total over the rounds)
    kd_temperature: float = 4.0
    kd_alpha: float = 0.7
    # ViT token reduction / CLCA
    token_keep: float | None = None
    token_method: str = "evit"
    token_at: list[int] | None = None
    clca: bool = False
    # ILA adapters
    adapters: str | None = None  # "ila"
    adapter_at: list[int] = field(default_factory=lambda: list(ILA_DEFAULT_AT))
    adapter_dim: int = 8
    # training (overrides the recipe's step values when given)
    epochs: int | None = None
    lr: float | None = None
    train_batch: int = 32
    max_steps: int | None = None
    optimizer: str = "adamw"
    device: str = "cpu"  # where training and gradient-based pruning run: cpu | cuda | cuda:N (bf16 autocast on CUDA)
    train_precision: str = "auto"  # auto (bf16 on CUDA, fp32 on the CPU) | bf16 (CUDA, or CPUs with AVX512-BF16/AMX) | fp32
    checkpoint_dir: Path | None = None  # default: <out>.ckpt beside the output, removed on success
    plot: bool = True
    check_preprocess: bool = True  # compare edgefg's inputs with timm's own transform before any work
    # the options of steps registered with no field above (StepSpec.options), by option name: {"foo_level": 3} for --foo-level
    flags: dict[str, Any] = field(default_factory=dict)
