"""``edgefg train``: a classifier for the user's own classes from a pretrained timm backbone and an ImageFolder.

Two modes, both starting from the backbone's own eval preprocessing and writing a timm hub folder
(config.json + model.safetensors) that ``edgefg compress`` takes as it is:

* ``linear`` (default): a linear probe. The frozen backbone's pooled features are computed once; a
  multinomial logistic-regression head is fitted on them (full-batch L-BFGS), its L2 strength chosen on a
  stratified hold-out of the training images and then refitted on all of them. Minutes on a CPU.
* ``finetune``: the linear probe first (LP-FT: a fitted head keeps the first fine-tuning steps from
  wrecking the pretrained features, Kumar et al. 2022), then every layer trained for ``epochs`` with
  augmentation (:func:`edgefg.compress.train.train`), on ``--device`` (a GPU if there is one).

The head is the backbone's own classifier module, resized (``reset_classifier``), so the written model is
the plain timm architecture and every later stage (ONNX export, quantization, the preprocessing check)
sees nothing new.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefg.calibration.dataset import Sample, iter_batches, scan
from edgefg.errors import DataError, UnsupportedError
from edgefg.models.loader import LoadedModel, save_hub_folder

log = logging.getLogger(__name__)

MODES = ("linear", "finetune")
WEIGHT_DECAYS = (1e-5, 1e-4, 1e-3, 1e-2)  # L2 strengths tried on the hold-out (per sample, on raw features)
MIN_PER_CLASS = 2


@dataclass
class TrainOptions:
    mode: str = "linear"  # linear | finetune
    epochs: int = 3  # finetune only
    lr: float = 3e-4  # finetune only (AdamW)
    batch_size: int = 32
    holdout: float = 0.2  # share of each class's training images that choose the head's L2 strength
    weight_decays: tuple[float, ...] = WEIGHT_DECAYS
    max_iter: int = 200  # L-BFGS iterations per fit
    device: str = "cpu"
    threads: int | None = None
    seed: int = 0
    force: bool = False
    # finetune: BatchNorm normalises with its running statistics (eval mode) while its affine weights train —
    # batches of ~32 give noisy statistics, and a BN-folded backbone (running stats 0/1, e.g. converted from
    # TFLite, as the shipped MobileNetV2s are) falls to chance with batch statistics. True: BN trains as usual.
    train_bn: bool = False


def _check(opts: TrainOptions) -> None:
    if opts.mode not in MODES:
        raise UnsupportedError(f"unknown --mode '{opts.mode}'", f"use one of: {', '.join(MODES)}")
    if not 0 < opts.holdout < 1:
        raise DataError(f"--holdout must be between 0 and 1, got {opts.holdout}")


def _labelled(root: Path, what: str) -> tuple[list[str], list[Sample]]:
    images = scan(root)
    if not images.labelled or images.classes is None:
        raise DataError(f"{what} '{root}' has no class folders", f"{what} needs one sub-folder per class (ImageFolder): DIR/CLASS/image.jpg")
    if len(images.classes) < 2:
        raise DataError(f"{what} '{root}' has one class ('{images.classes[0]}')", "a classifier needs at least two class folders")
    counts = np.bincount([s.label for s in images.samples if s.label is not None], minlength=len(images.classes))
    few = [c for c, n in zip(images.classes, counts) if n < MIN_PER_CLASS]
    if few:
        raise DataError(f"{len(few)} class folder(s) in '{root}' hold fewer than {MIN_PER_CLASS} images: {', '.join(few[:5])}",
                        "add images (a few dozen per class is typical for fine-grained classes) or remove those folders")
    return images.classes, images.samples


def features(module: Any, samples: Sequence[Sample], model: LoadedModel, batch_size: int, description: str) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """The backbone's pooled features (what its classifier reads) for ``samples``: (N×D, labels, skipped)."""
    import torch

    from edgefg.progress import track

    skipped: list[Path] = []
    feats, labels = [], []
    batches = iter_batches(samples, model.preprocess, batch_size, skipped)
    with torch.inference_mode():
        for b in track(batches, description, total=-(-len(samples) // batch_size)):
            x = torch.from_numpy(b.x)
            feats.append(module.forward_head(module.forward_features(x), pre_logits=True).float().numpy())
            labels.append(b.labels)
    if not feats:
        raise DataError("no readable images", "check the image files")
    return np.concatenate(feats), np.concatenate(labels), skipped


def fit_linear_head(x: np.ndarray, y: np.ndarray, n_classes: int, weight_decay: float, max_iter: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression on features ``x`` (no standardisation: the head reads raw features):
    mean cross-entropy + ``weight_decay``·‖W‖², full-batch L-BFGS. Returns (W: C×D, b: C)."""
    import torch

    torch.manual_seed(seed)
    xt, yt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))
    lin = torch.nn.Linear(x.shape[1], n_classes)
    torch.nn.init.zeros_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(xt), yt) + weight_decay * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lin.weight.detach().numpy().copy(), lin.bias.detach().numpy().copy()


def _split(y: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/hold-out indices: ``share`` of each class (at least one image) held out."""
    rng = np.random.default_rng(seed)
    fit, held = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = max(1, int(round(share * len(idx)))) if len(idx) > 1 else 0
        held += idx[:k].tolist()
        fit += idx[k:].tolist()
    return np.asarray(fit), np.asarray(held)


def _accuracy(logits: np.ndarray, y: np.ndarray, k: int = 1) -> float:
    top = np.argsort(-logits, axis=1)[:, :k]
    return float(np.mean([yy in row for yy, row in zip(y, top)])) if len(y) else float("nan")


def choose_weight_decay(x: np.ndarray, y: np.ndarray, n: int, opts: TrainOptions) -> tuple[float, dict[str, float]]:
    """The L2 strength with the best hold-out top-1 (ties: the stronger one); all hold-out scores."""
    fit, held = _split(y, opts.holdout, opts.seed)
    scores: dict[str, float] = {}
    for wd in opts.weight_decays:
        w, b = fit_linear_head(x[fit], y[fit], n, wd, opts.max_iter, opts.seed)
        scores[f"{wd:g}"] = round(_accuracy(x[held] @ w.T + b, y[held]), 4)
    best = max(opts.weight_decays, key=lambda wd: (scores[f"{wd:g}"], wd))
    return best, scores


def _set_head(module: Any, w: np.ndarray, b: np.ndarray) -> None:
    import torch

    module.reset_classifier(w.shape[0])
    head = module.get_classifier()
    if not isinstance(head, torch.nn.Linear) or tuple(head.weight.shape) != w.shape:
        raise UnsupportedError(f"the backbone's classifier is {type(head).__name__}, not one linear layer", "edgefg train takes timm CNN/ViT backbones whose head is a Linear")
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(w))
        head.bias.copy_(torch.from_numpy(b))


def _per_class(logits: np.ndarray, y: np.ndarray, classes: list[str]) -> dict[str, dict[str, float]]:
    pred = logits.argmax(1)
    return {c: {"images": int((y == i).sum()), "top1": round(float((pred[y == i] == i).mean()), 4) if (y == i).any() else float("nan")}
            for i, c in enumerate(classes)}


def train_classifier(backbone: LoadedModel, data: str | Path, out: str | Path, val_data: str | Path | None = None,
                     opts: TrainOptions | None = None) -> dict[str, Any]:
    """Fit ``backbone`` to the classes of ImageFolder ``data`` and write a hub folder at ``out``; the
    report (also ``out/train.json``) holds the settings, the hold-out scores and, with ``val_data``,
    top-1/top-5 and per-class accuracy on it."""
    import torch

    from edgefg.manifest import atomic_output_dir
    from edgefg.outputs import write_json, write_text

    opts = opts or TrainOptions()
    _check(opts)
    out = Path(out)
    if out.exists() and not opts.force:  # before minutes of feature extraction, not after
        from edgefg.errors import OutputExistsError

        raise OutputExistsError(f"output '{out}' already exists", "choose another path or pass --force to overwrite")
    if backbone.module is None or not backbone.arch:
        raise UnsupportedError("edgefg train needs PyTorch weights of a timm model (a hub folder: config.json + model.safetensors)",
                               "an ONNX file cannot be trained; pass the model it was exported from")
    if opts.threads:
        torch.set_num_threads(opts.threads)
    classes, samples = _labelled(Path(data), "--data")
    val = None
    if val_data is not None:
        val_classes, val_samples = _labelled(Path(val_data), "--val-data")
        unknown = sorted(set(val_classes) - set(classes))
        if unknown:
            raise DataError(f"{len(unknown)} --val-data class folder(s) are not in --data: {', '.join(unknown[:5])}",
                            "validation classes must be training classes (same folder names)")
        remap = {i: classes.index(c) for i, c in enumerate(val_classes)}
        val = [Sample(s.path, remap[s.label]) for s in val_samples if s.label is not None]
    module = backbone.module.eval()
    t0 = time.perf_counter()
    x, y, skipped = features(module, samples, backbone, opts.batch_size, "features (train)")
    wd, holdout = choose_weight_decay(x, y, len(classes), opts)
    w, b = fit_linear_head(x, y, len(classes), wd, opts.max_iter, opts.seed)
    _set_head(module, w, b)
    report: dict[str, Any] = {
        "backbone": backbone.source.get("path") or backbone.arch, "architecture": backbone.arch, "data": str(data), "classes": len(classes),
        "train_images": int(len(y)), "skipped_images": [str(p) for p in skipped], "options": asdict(opts),
        "linear_probe": {"weight_decay": wd, "holdout_top1": holdout, "train_top1": round(_accuracy(x @ w.T + b, y), 4)},
    }
    if opts.mode == "finetune":
        from edgefg.compress.train import TrainConfig, train

        cfg = TrainConfig(epochs=opts.epochs, lr=opts.lr, batch_size=opts.batch_size, seed=opts.seed, device=opts.device,
                          threads=opts.threads, freeze_bn=not opts.train_bn)
        result = train(module, samples, backbone.preprocess, cfg, description="fine-tune")
        module.eval()
        report["finetune"] = {"epochs": result.epochs_done, "steps": result.steps, "history": result.history}
    report["train_seconds"] = round(time.perf_counter() - t0, 1)
    if val is not None:
        vx, vy, vskipped = features(module, val, backbone, opts.batch_size, "features (val)")
        head = module.get_classifier()
        with torch.inference_mode():
            logits = head(torch.from_numpy(vx)).float().numpy()
        report["val"] = {"data": str(val_data), "images": int(len(vy)), "skipped": len(vskipped), "top1": round(_accuracy(logits, vy), 4),
                         "top5": round(_accuracy(logits, vy, 5), 4), "per_class": _per_class(logits, vy, classes)}
    trained = LoadedModel(labels=list(classes), preprocess=backbone.preprocess, module=module, arch=backbone.arch,
                          source={**backbone.source, "data_config": {**(backbone.source.get("data_config") or {}), "num_classes": len(classes)}})
    with atomic_output_dir(out, force=opts.force) as tmp:
        save_hub_folder(module, trained, tmp)
        write_json(tmp / "train.json", report)
        write_text(tmp / "train.md", train_markdown(report))
    return report


def train_markdown(report: dict[str, Any]) -> str:
    """The report a person reads (train.md)."""
    lp = report["linear_probe"]
    lines = [f"# edgefg train — {report['architecture']} on {report['classes']} classes", "",
             f"- backbone: `{report['backbone']}`; data: `{report['data']}` ({report['train_images']} images"
             + (f", {len(report['skipped_images'])} unreadable skipped" if report["skipped_images"] else "") + ")",
             f"- mode: {report['options']['mode']}; linear head L2 {lp['weight_decay']:g} chosen on a {report['options']['holdout']:.0%} hold-out "
             f"({', '.join(f'{k}: {v:.3f}' for k, v in lp['holdout_top1'].items())}); train top-1 {lp['train_top1']:.3f}"]
    if "finetune" in report:
        lines.append(f"- fine-tuned {report['finetune']['epochs']} epoch(s), {report['finetune']['steps']} steps")
    lines.append(f"- {report['train_seconds']} s")
    if "val" in report:
        v = report["val"]
        lines += ["", f"**Validation** (`{v['data']}`, {v['images']} images): top-1 {v['top1']:.4f}, top-5 {v['top5']:.4f}", "",
                  "| class | images | top-1 |", "|---|---:|---:|"]
        worst = sorted(v["per_class"].items(), key=lambda kv: (kv[1]["top1"], kv[0]))
        from edgefg.validate.report import md_cell

        lines += [f"| {md_cell(c)} | {r['images']} | {r['top1']:.3f} |" for c, r in worst[:10]]
        if len(worst) > 10:
            lines.append(f"| … {len(worst) - 10} more (train.json) | | |")
    return "\n".join(lines) + "\n"
