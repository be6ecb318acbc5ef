"""``edgefg enroll``: add classes to a deployed bundle from a few images each, without retraining.

The bundle must carry an embedding output (``edgefg deploy ... --embedding``): the input features of
its final linear classifier. Each enrolled class is a *prototype* — the mean of the L2-normalised
embeddings of its images, computed through the bundle's own preprocessing and backend (an INT8
bundle's quantization is part of it). The runtime (:mod:`edgefg.runtime.engine.prototypes`) scores

    trained classes: the linear head's logits     enrolled classes: T × cos(embedding, prototype) + b

in one engine call, one score vector over the extended labels.

**Calibration (T, b)**, leave-one-out on the enrolment images (each image against a prototype built
without it). ``deploy --embedding`` keeps the embeddings and head scores of its parity images of the
trained classes (``embedding_reference.npz``); their mean embedding is the *centre* subtracted before
the cosine (post-ReLU features share a large common component), and (T, b) minimise the mean
cross-entropy of the combined scores, half over the enrolment images (target: their class) and half
over those reference images (target: the trained head's own top-1) — neither head dominates. Convex in
(T, b): a log grid over T, a ternary search over b; then b is capped so that no reference image's
top-1 changes, with half a standard deviation of their margins to spare (a guard for the trained classes:
their predictions are what the bundle was validated on; reference images whose top-1 is a masked class are left
out of the fit and the guard). Without reference images, b is the smallest offset
with which the own prototype outscores the trained head on 90 % of the enrolment images.

The prototype file (``prototypes.npz``, numeric arrays only, read with ``allow_pickle=False``) also
keeps each enrolment image's embedding and trained-head scores, so re-enrolment (a class enrolled
again: its images are replaced) and ``--remove`` re-fit the calibration on every enrolled image.

**``--remove``** drops an enrolled class; a *trained* class is masked: its column leaves the score
vector and its name the labels (the model file is unchanged and the head's labels are kept in the
manifest), and it may be enrolled again from images. The input bundle is never modified: a new
bundle (new release) is written, re-signed only with ``--sign`` (an old signature is not copied). The
input's drift reference profile (``drift_reference.json``) describes the old label set and is left out
(``edgefg validate NEW --data DIR --drift-reference FILE`` makes one for the new bundle).
"""
from __future__ import annotations

import copy
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np

from edgefg.errors import BundleError, DataError, InputPathError
from edgefg.manifest import LABELS_NAME, MANIFEST_NAME, Manifest, atomic_output_dir, load_manifest
from edgefg.runtime.engine.prototypes import PROTOTYPES_FILE, l2_normalise, read_arrays

log = logging.getLogger(__name__)
MIN_IMAGES = 3
QUANTILE = 0.9
TEMPERATURES = np.geomspace(1.0, 256.0, 33)


@dataclass
class EnrollResult:
    directory: Path
    manifest: Manifest
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    fit: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _store(bundle: Path, m: Manifest) -> dict[str, np.ndarray]:
    """The enrolment rows kept in the bundle: embeddings (N, D), head scores (N, C), owner (N,)."""
    spec = m.prototypes
    if not spec or not spec["classes"]:
        return {}
    arrays = read_arrays(bundle / spec["file"])
    for key in ("embeddings", "head_scores", "owner"):
        if key not in arrays:
            raise BundleError(f"'{spec['file']}' lacks the array '{key}'", "re-run edgefg enroll on the original bundle")
    return {k: arrays[k] for k in ("embeddings", "head_scores", "owner")}


def _reference(bundle: Path, m: Manifest) -> dict[str, np.ndarray] | None:
    """The trained-class reference images' embeddings and head scores deploy --embedding kept, if any."""
    from edgefg.runtime.engine.prototypes import REFERENCE_FILE

    if REFERENCE_FILE not in m.files:
        return None
    arrays = read_arrays(bundle / REFERENCE_FILE)
    if "embeddings" not in arrays or "head_scores" not in arrays or len(arrays["embeddings"]) == 0:
        return None
    return arrays


def _without_masked(reference: dict[str, np.ndarray] | None, head_labels: list[str], masked: list[str]) -> dict[str, np.ndarray] | None:
    """The reference images less those the trained head calls a masked class: they are images of a class
    being replaced (e.g. re-enrolled from images), which the guard must not keep for the trained head."""
    if reference is None or not masked:
        return reference
    idx = [head_labels.index(name) for name in masked]
    keep = ~np.isin(reference["head_scores"].argmax(1), idx)
    if not keep.any():
        return None
    return {"embeddings": reference["embeddings"][keep], "head_scores": reference["head_scores"][keep]}


def _embed(bundle: Path, m: Manifest, folder: Path, names: list[str], samples: list) -> tuple[np.ndarray, np.ndarray]:
    """Trained-head scores and embeddings of ``samples`` through the bundle's own preprocessing and backend."""
    from edgefg.calibration.dataset import iter_batches
    from edgefg.runtime.engine.bundle import LoadedBundle

    plain = copy.deepcopy(m)  # the raw model: trained head only
    plain.prototypes, plain.labels = {}, list((m.prototypes or {}).get("head_labels", m.labels))
    skipped: list[Path] = []
    heads, embs = [], []
    with LoadedBundle(bundle, verify=False, manifest=plain) as lb:
        for batch in iter_batches(samples, plain.preprocess, 16, skipped):
            if skipped:
                break
            h, e = lb.scores_and_embedding(batch.x)
            heads.append(h)
            embs.append(e)
    if skipped:
        raise DataError(f"image '{skipped[0]}' cannot be read (corrupt or not an image)", f"remove or replace it in '{folder}'")
    head, emb = np.concatenate(heads), np.concatenate(embs)
    if not (np.all(np.isfinite(head)) and np.all(np.isfinite(emb))):
        raise DataError("the bundle gives non-finite scores on the enrolment images", "check the bundle with edgefg validate")
    return head, emb


def _ce(z: np.ndarray, target: np.ndarray) -> float:
    zmax = z.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(z - zmax).sum(1)) + zmax[:, 0] - z[np.arange(len(z)), target]))


def fit_calibration(head_scores: np.ndarray, embeddings: np.ndarray, owner: np.ndarray, keep: np.ndarray,
                    activation: str = "logits", reference: dict[str, np.ndarray] | None = None,
                    centre: np.ndarray | None = None, quantile: float = QUANTILE) -> dict[str, Any]:
    """Temperature and bias of the prototype scores (see the module doc): leave-one-out on the enrolment
    images; with ``reference`` (trained-class images' embeddings and head scores, kept by deploy), the
    mean cross-entropy of the combined scores over the enrolment images (target: their class) and over
    the reference images (target: the trained head's own top-1), weighted half each, is minimised."""
    c = np.zeros((1, embeddings.shape[1])) if centre is None else np.asarray(centre, np.float64).reshape(1, -1)
    e = l2_normalise(np.asarray(embeddings, np.float64) - c).astype(np.float64)
    k = int(owner.max()) + 1
    sums = np.stack([e[owner == j].sum(0) for j in range(k)])
    counts = np.bincount(owner, minlength=k).astype(np.float64)
    protos = l2_normalise(sums / counts[:, None]).astype(np.float64)
    cos = e @ protos.T
    loo = sums[owner] - e  # each image's own prototype without it
    own = (e * loo).sum(1) / np.maximum(np.linalg.norm(loo, axis=1), 1e-12)
    cos[np.arange(len(e)), owner] = own

    def head(scores: np.ndarray) -> np.ndarray:
        h = np.asarray(scores, np.float64)
        return (np.log(np.maximum(h, 1e-12)) if activation == "softmax" else h)[:, keep]

    s = head(head_scores)
    target = s.shape[1] + owner
    neg = None
    if reference is not None and s.shape[1]:
        r = l2_normalise(np.asarray(reference["embeddings"], np.float64) - c).astype(np.float64)
        neg = (head(reference["head_scores"]), r @ protos.T)
    top = s.max(1) if s.shape[1] else np.zeros(len(e))
    best: dict[str, Any] | None = None
    for t in TEMPERATURES:
        if neg is None:
            b = float(np.quantile(top - t * own, quantile)) + 1e-3 if s.shape[1] else 0.0
            loss = _ce(np.concatenate([s, t * cos + b], 1), target)
        else:
            hs, rc = neg
            rt = hs.argmax(1)

            def loss_at(b: float) -> float:
                return 0.5 * _ce(np.concatenate([s, t * cos + b], 1), target) + 0.5 * _ce(np.concatenate([hs, t * rc + b], 1), rt)

            lo, hi = -4.0 * t - 1e3, 4.0 * t + 1e3  # convex in b: ternary search
            for _ in range(80):
                m1, m2 = lo + (hi - lo) / 3, hi - (hi - lo) / 3
                lo, hi = (lo, m2) if loss_at(m1) < loss_at(m2) else (m1, hi)
            # a guard: the prototypes never overturn the trained head's top-1 on its reference images
            # (less half a standard deviation of those margins: a few reference images underestimate the tail)
            gap = hs.max(1) - t * rc.max(1)
            b = min((lo + hi) / 2, float(gap.min() - 0.5 * gap.std()) - 1e-3)
            loss = loss_at(b)
        if best is None or loss < best["loss"]:
            best = {"temperature": float(t), "bias": float(b), "loss": loss}
    assert best is not None
    t, b = best["temperature"], best["bias"]
    fit = {**best, "images": int(len(e)), "loo_top1": float((np.concatenate([s, t * cos + b], 1).argmax(1) == target).mean())}
    if neg is not None:
        hs, rc = neg
        fit["reference_images"] = int(len(hs))
        fit["reference_kept"] = float((np.concatenate([hs, t * rc + b], 1).argmax(1) == hs.argmax(1)).mean())
        fit["method"] = "leave-one-out; T, b: least cross-entropy, half on the enrolment images, half on the bundle's reference images of trained classes"
    else:
        fit["method"] = f"leave-one-out, no reference images: b: own prototype beats the trained head on {quantile:.0%} of the enrolment images; T: least cross-entropy"
    return fit


def enroll(
    bundle: str | Path,
    out: str | Path,
    images: str | Path | None = None,
    remove: Sequence[str] = (),
    sign_key: str | Path | None = None,
    force: bool = False,
    release: int | None = None,
) -> EnrollResult:
    bundle, out = Path(bundle), Path(out)
    if not images and not remove:
        raise DataError("nothing to enrol or remove", "pass --images DIR (one folder per new class) and/or --remove CLASS")
    signer = None
    if sign_key:  # a bad key fails now, not after the work
        from edgefg.trust.signing import load_private_key

        signer = load_private_key(sign_key)
    if out.exists() and out.resolve() == bundle.resolve():
        raise InputPathError(f"the output '{out}' is the input bundle; enroll never modifies its input", "pass -o NEW_BUNDLE")
    m = load_manifest(bundle, verify=True)
    spec = copy.deepcopy(m.prototypes) if m.prototypes else {}
    head_labels = list(spec.get("head_labels", m.labels))
    removed_trained = list(spec.get("removed", []))
    classes = list(spec.get("classes", []))
    store = _store(bundle, m)
    emb_index = m.output_index("embedding")
    result = EnrollResult(out, m)

    def drop(name: str) -> None:
        nonlocal classes, store
        i = classes.index(name)
        keep_rows = store["owner"] != i
        store = {k: v[keep_rows] for k, v in store.items()}
        store["owner"] = np.where(store["owner"] > i, store["owner"] - 1, store["owner"]).astype(np.int32)
        classes.pop(i)

    for name in remove:
        if name in classes:
            drop(name)
        elif name in head_labels and name not in removed_trained:
            removed_trained.append(name)
        else:
            raise DataError(f"--remove {name}: the bundle has no class '{name}'", f"its labels are in {bundle / LABELS_NAME}")
        result.removed.append(name)

    if images:
        from edgefg.calibration.dataset import scan

        folder = Path(images)
        found = scan(folder)
        if not found.labelled:
            raise DataError(f"'{folder}' has no class folders", "pass --images DIR with one sub-folder of images per new class")
        kept = {lab for lab in head_labels if lab not in removed_trained}
        for ci, name in enumerate(found.classes or []):
            if name in kept:
                raise DataError(f"class '{name}' exists already in the bundle (a trained class)",
                                f"rename the folder, or pass --remove {name} to mask the trained class and enrol it from images")
            n = sum(1 for s in found.samples if s.label == ci)
            if n < MIN_IMAGES:
                raise DataError(f"class folder '{folder / name}' holds {n} image(s); enrolment needs at least {MIN_IMAGES} per class",
                                "add images of the class to the folder")
        if emb_index is None:
            raise BundleError(f"bundle '{bundle}' has no embedding output, which enrolment needs",
                              "re-deploy it with: edgefg deploy ARTIFACT --target T --embedding -o BUNDLE")
        head, emb = _embed(bundle, m, folder, found.classes or [], found.samples)
        labels = np.asarray([s.label for s in found.samples])
        for ci, name in enumerate(found.classes or []):
            if name in classes:
                drop(name)
                result.replaced.append(name)
            else:
                result.added.append(name)
            classes.append(name)
            rows = labels == ci
            new = {"embeddings": emb[rows].astype(np.float32), "head_scores": head[rows].astype(np.float32),
                   "owner": np.full(int(rows.sum()), len(classes) - 1, np.int32)}
            store = new if not store else {k: np.concatenate([store[k], new[k]]) for k in new}

    keep = np.asarray([i for i, lab in enumerate(head_labels) if lab not in set(removed_trained)], dtype=np.int64)
    if not len(keep) and not classes:
        raise DataError("that would leave the bundle with no class", "keep at least one class")
    reference = _reference(bundle, m)
    centre = reference["embeddings"].astype(np.float64).mean(0) if reference is not None else None
    reference = _without_masked(reference, head_labels, removed_trained)
    fit = fit_calibration(store["head_scores"], store["embeddings"], store["owner"], keep, m.output_activation, reference, centre) if classes else {}
    result.fit = fit

    new = copy.deepcopy(m)
    new.labels = [lab for lab in head_labels if lab not in set(removed_trained)] + classes
    new.prototypes = {
        "file": PROTOTYPES_FILE,
        "embedding_output": m.outputs[emb_index].name if emb_index is not None else "embedding",
        "head_labels": head_labels,
        "removed": removed_trained,
        "classes": classes,
        "temperature": float(fit.get("temperature", 1.0)),
        "bias": float(fit.get("bias", 0.0)),
        "fit": fit,
    }
    new.stamp_release(release)
    new.compression = list(m.compression) + [{"method": "enroll", "added": result.added, "replaced": result.replaced, "removed": result.removed,
                                              "classes": len(classes), "from_release": m.release}]
    from edgefg.runtime.outputs.drift_profile import PROFILE_NAME

    if PROFILE_NAME in m.files:  # its class histogram and confidences describe the old label set
        result.notes.append(f"the input's drift reference ({PROFILE_NAME}) describes its {len(m.labels)} classes and was left out; "
                            f"make one for the new bundle: edgefg validate {out} --data DIR --drift-reference drift.json")
    with atomic_output_dir(out, force) as tmp:
        for rel in m.files:  # the listed (checksummed) files only: no old signature, no stray file
            if rel in (LABELS_NAME, MANIFEST_NAME, PROTOTYPES_FILE, PROFILE_NAME):
                continue
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(bundle / rel, tmp / rel)
        if classes:
            e = l2_normalise(store["embeddings"] - (0 if centre is None else centre[None, :]))
            protos = np.stack([e[store["owner"] == c].mean(0) for c in range(len(classes))]).astype(np.float32)
            counts = np.bincount(store["owner"], minlength=len(classes)).astype(np.int32)
        else:
            protos = np.zeros((0, 0), np.float32)
            counts = np.zeros(0, np.int32)
            store = {"embeddings": np.zeros((0, 0), np.float32), "head_scores": np.zeros((0, len(head_labels)), np.float32), "owner": np.zeros(0, np.int32)}
        with open(tmp / PROTOTYPES_FILE, "wb") as fh:
            np.savez(fh, prototypes=protos, counts=counts, centre=np.zeros(0, np.float32) if centre is None else centre.astype(np.float32), **store)
        new.record_files(tmp)
        new.save(tmp)
        from edgefg.runtime.engine.bundle import LoadedBundle

        with LoadedBundle(tmp, verify=True):  # schema, checksums and the prototype file, before it is moved into place
            pass
    if signer is not None:
        from edgefg.trust.bundle_signing import sign_bundle

        sign_bundle(out, signer)
    result.manifest = new
    return result


@click.command("enroll")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--images", type=click.Path(path_type=Path), help=f"ImageFolder of new classes (one sub-folder per class, at least {MIN_IMAGES} images each).")
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="New bundle directory to write (the input is never modified).")
@click.option("--remove", multiple=True, metavar="CLASS", help="Drop an enrolled class, or mask a trained one (repeatable).")
@click.option("--sign", "sign_key", type=click.Path(path_type=Path), help="Sign the new bundle with this private key (edgefg keygen).")
@click.option("--release", type=click.IntRange(0, 2**63 - 1), help="The new bundle's release number; default: now in seconds.")
@click.option("--force", is_flag=True, help="Overwrite the output directory.")
def enroll_cmd(bundle, images, out, remove, sign_key, release, force) -> None:
    """Add classes to BUNDLE from a few images each (prototypes beside the trained head), no retraining."""
    from edgefg.cli_support import console, handle_errors

    @handle_errors
    def run() -> None:
        r = enroll(bundle, out, images=images, remove=remove, sign_key=sign_key, force=force, release=release)
        c = console()
        parts = [f"{len(r.added)} added", f"{len(r.replaced)} re-enrolled", f"{len(r.removed)} removed"]
        c.print(f"[green]bundle[/] {out}: {len(r.manifest.labels)} classes ({', '.join(parts)}); release {r.manifest.release}", highlight=False)
        if r.fit:
            c.print(f"calibration: temperature {r.fit['temperature']:.3g}, bias {r.fit['bias']:.3g}; "
                    f"leave-one-out top-1 on the {r.fit['images']} enrolment images {r.fit['loo_top1']:.3f}", highlight=False)
        for note in r.notes:
            c.print(f"note: {note}", highlight=False)
        c.print("signed" if sign_key else "unsigned (the input's signature does not carry over; sign with --sign KEY or edgefg sign)", highlight=False)
        c.print(f"next: edgefg validate {out} --data DIR   |   edgefg run {out} --source 0", highlight=False)

    run()
