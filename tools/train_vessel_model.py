"""Train the learned vessel-lumen model (iousguide/models/vessel_lumen.onnx).

Two stages, because the project never needs PyTorch at run time:

1. ``prepare`` (project venv): builds the training arrays on the model grid (0.4 mm/px, --input-px-mm; see
   ``iousguide.analysis.learned.model_input``) from

   * the real usgra-seg images with expert masks (``../shared/data/vessels_usgra``), training
     part only: images are taken in sorted-name order and index % 4 == 3 is the held-out part,
     never read here; of the rest, index % 8 == 2 is the validation part (early stopping and
     thresholds), the others are trained on. Masks are RGB, vessel = (0, 128, 0).
   * phantom frames ``iousguide.phantom.generate_case`` with seeds 8200-8799 (training) and
     8800-8899 (validation), lumen masks filled from the exact truth contours; tumours,
     sheaths, shadows and the dark area outside the fan are negatives.
   * a few all-black and uniform-speckle frames (negatives).

   ``.venv/bin/python tools/train_vessel_model.py prepare --usgra ../shared/data/vessels_usgra --out /tmp/vessel_data.npz``

2. ``train`` (a separate venv with torch, e.g. ``python3 -m venv /work/trainenv &&
   /work/trainenv/bin/pip install torch==2.13.0 numpy opencv-python-headless onnx``): trains the
   tiny U-Net with augmentation (scale, gain, gamma, speckle, blur, left-right flip), keeps
   the epoch with the best validation Dice, folds BatchNorm into the convolutions and
   exports ONNX (opset 13; a nominal 64x64 input in the graph, which OpenCV reshapes to each
   frame's size: OpenCV 4.x's importer cannot read a graph with symbolic height and width) plus
   a JSON metadata file; checks that OpenCV's DNN module loads it and agrees with PyTorch on
   another input size.

   ``/work/trainenv/bin/python tools/train_vessel_model.py train --data /tmp/vessel_data.npz --out iousguide/models/vessel_lumen.onnx``

Nothing here is imported by iousguide at run time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

#: model grid and normalisation (written into the model's metadata; run time reads them from there).
#: ``prepare --input-px-mm`` overrides the grid; the value travels in the data file to ``train``.
META = {"input_px_mm": 0.4, "pad_multiple": 16, "output_stride": 2, "norm_percentile": 90.0, "norm_floor": 32.0,
        "black_level": 8, "threshold": 0.5, "peak_threshold": 0.7}

#: architecture of the committed model (``train --channels/--decoder/--e0-convs``)
ARCH = {"channels": (8, 16, 24, 32), "decoder": "add", "e0_convs": 1}

PHANTOM_TRAIN_SEEDS = range(8200, 8800)
PHANTOM_VAL_SEEDS = range(8800, 8900)


# ----------------------------------------------------------------------------- data preparation

def usgra_split(names: list[str]) -> dict[str, list[str]]:
    """Fixed split of the usgra images (sorted names): held-out (index % 4 == 3, never used here),
    validation (index % 8 == 2) and training (the rest)."""
    names = sorted(names)
    out = {"holdout": [], "val": [], "train": []}
    for i, n in enumerate(names):
        if i % 4 == 3:
            out["holdout"].append(n)
        elif i % 8 == 2:
            out["val"].append(n)
        else:
            out["train"].append(n)
    return out


def to_grid(gray: np.ndarray, mask: np.ndarray, *, spacing_mm) -> tuple[np.ndarray, np.ndarray]:
    """(network input, soft lumen target) on the model grid; both (h, w) float32."""
    from iousguide.analysis.learned import model_input

    x = model_input(gray, spacing_mm=spacing_mm, input_px_mm=float(META["input_px_mm"]),
                    norm_percentile=META["norm_percentile"], norm_floor=META["norm_floor"],
                    black_level=META["black_level"])
    h, w = x.shape
    y = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    return x, y


def usgra_samples(folder: Path, names: list[str]):
    from iousguide.evaluation import usgra_vessel_mask  # project venv (prepare), not the torch one

    for name in names:
        gray = cv2.imread(str(folder / "images" / name), cv2.IMREAD_GRAYSCALE)
        m = cv2.imread(str(folder / "masks" / name), cv2.IMREAD_COLOR)  # BGR
        if gray is None or m is None:
            raise SystemExit(f"cannot read usgra image or mask {name}")
        vessel = usgra_vessel_mask(m)
        yield (*to_grid(gray, vessel, spacing_mm=None), f"usgra:{name}")


def phantom_sample(seed: int):
    from iousguide.phantom import generate_case

    rng = np.random.default_rng([seed, 77])
    difficulty = float(rng.uniform(0.0, 1.0))
    width, height = [(640, 480), (800, 600), (512, 512)][int(rng.integers(0, 3))]
    frames, truth = generate_case(seed, difficulty=difficulty, n_frames=1, width_px=width, height_px=height)
    frame = frames[0]
    gray = frame.gray if hasattr(frame, "gray") else frame.pixels
    mask = np.zeros(gray.shape, np.uint8)
    for v in truth.frames[0]["vessels"]:
        for c in [v.get("contour_px")] + list(v.get("contours_px") or []):
            if c is not None and len(c) >= 3:
                cv2.fillPoly(mask, [np.round(np.asarray(c) * 16).astype(np.int32)], 1, shift=4)
    return (*to_grid(np.ascontiguousarray(gray), mask.astype(bool), spacing_mm=frame.spacing_mm), f"phantom:{seed}")


def negative_samples(count: int, seed: int):
    """All-black and uniform speckle frames (no vessel anywhere)."""
    rng = np.random.default_rng(seed)
    for k in range(count):
        h, w = int(rng.integers(300, 600)), int(rng.integers(300, 800))
        if k % 3 == 0:
            gray = np.zeros((h, w), np.uint8)
        else:
            speckle = rng.rayleigh(1.0, (h, w)).astype(np.float32)
            speckle = cv2.GaussianBlur(speckle, (0, 0), float(rng.uniform(0.6, 2.0)))
            level = float(rng.uniform(40, 160))
            gray = np.clip(speckle / speckle.mean() * level, 0, 255).astype(np.uint8)
        yield (*to_grid(gray, np.zeros((h, w), bool), spacing_mm=(0.1, 0.1) if k % 2 else None), f"negative:{k}")


def prepare(usgra: Path, *, n_train_seeds: int, n_val_seeds: int, n_negatives: int = 12,
            input_px_mm: float | None = None) -> dict:
    """All training/validation samples as lists of model-grid arrays (pure data, no torch)."""
    if input_px_mm is not None:
        META["input_px_mm"] = float(input_px_mm)
    names = sorted(p.name for p in (usgra / "images").glob("*.png"))
    if not names:
        raise SystemExit(f"no usgra images under {usgra / 'images'}")
    split = usgra_split(names)
    data = {"train": [], "val": [], "meta": dict(META)}
    data["train"] += list(usgra_samples(usgra, split["train"]))
    data["val"] += list(usgra_samples(usgra, split["val"]))
    t0 = time.time()
    for seed in list(PHANTOM_TRAIN_SEEDS)[:n_train_seeds]:
        data["train"].append(phantom_sample(seed))
    for seed in list(PHANTOM_VAL_SEEDS)[:n_val_seeds]:
        data["val"].append(phantom_sample(seed))
    data["train"] += list(negative_samples(n_negatives, 1))
    data["val"] += list(negative_samples(max(n_negatives // 4, 1), 2))
    print(f"prepared {len(data['train'])} training and {len(data['val'])} validation samples "
          f"({len(split['train'])}/{len(split['val'])} usgra; phantoms in {time.time() - t0:.0f} s)", file=sys.stderr)
    return data


def save_data(data: dict, path: Path) -> None:
    arrays = {"meta": np.array(json.dumps(data.get("meta", META)))}
    for part in ("train", "val"):
        samples = data[part]
        for i, (x, y, tag) in enumerate(samples):
            arrays[f"{part}_{i}_x"] = x.astype(np.float16)
            arrays[f"{part}_{i}_y"] = (y * 255).round().astype(np.uint8)
            arrays[f"{part}_{i}_tag"] = np.array(tag)
    np.savez_compressed(path, **arrays)


def load_data(path: Path) -> dict:
    z = np.load(path)
    data = {"train": [], "val": []}
    # data files written before the grid travelled with them were made at 0.3 mm/px
    data["meta"] = {**META, **(json.loads(str(z["meta"])) if "meta" in z else {"input_px_mm": 0.3})}
    for part in ("train", "val"):
        i = 0
        while f"{part}_{i}_x" in z:
            data[part].append((z[f"{part}_{i}_x"].astype(np.float32), z[f"{part}_{i}_y"].astype(np.float32) / 255,
                               str(z[f"{part}_{i}_tag"])))
            i += 1
    return data


# ----------------------------------------------------------------------------- augmentation (numpy)

def random_crop(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, size: int, *, augment: bool):
    """One augmented (size, size) crop; pads with black (outside the image is black)."""
    if augment:
        s = float(np.exp(rng.uniform(np.log(0.7), np.log(1.45))))
        h, w = x.shape
        nh, nw = max(int(round(h * s)), 8), max(int(round(w * s)), 8)
        x = cv2.resize(x, (nw, nh), interpolation=cv2.INTER_LINEAR)
        y = cv2.resize(y, (nw, nh), interpolation=cv2.INTER_LINEAR)
    h, w = x.shape
    ph, pw = max(size - h, 0), max(size - w, 0)
    if ph or pw:
        top, left = (int(rng.integers(0, ph + 1)), int(rng.integers(0, pw + 1))) if augment else (0, 0)
        x = np.pad(x, ((top, ph - top), (left, pw - left)))
        y = np.pad(y, ((top, ph - top), (left, pw - left)))
        h, w = x.shape
    # prefer crops that hold some lumen half of the time
    y0, x0 = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    if augment and rng.random() < 0.5 and y.max() > 0.5:
        ys, xs = np.nonzero(y > 0.5)
        k = int(rng.integers(0, len(ys)))
        y0 = int(np.clip(ys[k] - rng.integers(size // 8, size - size // 8), 0, h - size))
        x0 = int(np.clip(xs[k] - rng.integers(size // 8, size - size // 8), 0, w - size))
    x = x[y0:y0 + size, x0:x0 + size].copy()
    y = y[y0:y0 + size, x0:x0 + size].copy()
    if augment:
        if rng.random() < 0.5:
            x, y = x[:, ::-1].copy(), y[:, ::-1].copy()
        gamma = float(np.exp(rng.uniform(np.log(0.7), np.log(1.4))))
        gain = float(np.exp(rng.uniform(np.log(0.65), np.log(1.5))))
        x = gain * np.power(np.clip(x, 0, None) / 1.0, gamma)
        if rng.random() < 0.4:
            speckle = rng.rayleigh(1.0, x.shape).astype(np.float32) / 1.2533
            speckle = cv2.GaussianBlur(speckle, (0, 0), float(rng.uniform(0.5, 1.2)))
            mix = float(rng.uniform(0.1, 0.4))
            x = x * ((1 - mix) + mix * speckle)
        if rng.random() < 0.3:
            x = cv2.GaussianBlur(x.astype(np.float32), (0, 0), float(rng.uniform(0.4, 1.0)))
        if rng.random() < 0.3:
            x = x + rng.normal(0, rng.uniform(0.01, 0.06), x.shape)
        x = np.clip(x, 0, 2.5)
    return x.astype(np.float32), y.astype(np.float32)


# ----------------------------------------------------------------------------- model and training (torch)

def build_model(channels=ARCH["channels"], *, decoder: str = ARCH["decoder"], e0_convs: int = ARCH["e0_convs"]):
    """The U-Net. ``decoder="cat"``: upsampled features concatenated with the skip, then a 3x3
    conv (the first model); ``"add"``: upsampled features projected by a 1x1 conv and added to
    the skip, then a 3x3 conv (about 1.5x faster in OpenCV's DNN at the same widths).
    ``e0_convs``: convolutions at the first (half-resolution) level."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    def cbr(i, o, stride=1):
        return nn.Sequential(nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

    class LumenUNet(nn.Module):
        """Input (1, 1, H, W) with H, W multiples of 16; output (1, 1, H/2, W/2) probability."""

        def __init__(self):
            super().__init__()
            c0, c1, c2, c3 = channels
            self.e0 = nn.Sequential(cbr(1, c0, 2), *[cbr(c0, c0) for _ in range(e0_convs - 1)])
            self.e1 = nn.Sequential(cbr(c0, c1, 2), cbr(c1, c1))
            self.e2 = nn.Sequential(cbr(c1, c2, 2), cbr(c2, c2))
            self.e3 = nn.Sequential(cbr(c2, c3, 2), cbr(c3, c3))
            if decoder == "cat":
                self.d2 = cbr(c3 + c2, c2)
                self.d1 = cbr(c2 + c1, c1)
                self.d0 = cbr(c1 + c0, c0)
            else:
                self.p2, self.p1, self.p0 = nn.Conv2d(c3, c2, 1), nn.Conv2d(c2, c1, 1), nn.Conv2d(c1, c0, 1)
                self.d2, self.d1, self.d0 = cbr(c2, c2), cbr(c1, c1), cbr(c0, c0)
            self.head = nn.Conv2d(c0, 1, 1)

        def _up(self, y, skip, level):
            d = getattr(self, f"d{level}")
            if decoder == "cat":
                return d(torch.cat([F.interpolate(y, scale_factor=2.0, mode="nearest"), skip], 1))
            return d(F.interpolate(getattr(self, f"p{level}")(y), scale_factor=2.0, mode="nearest") + skip)

        def logits(self, x):
            x0 = self.e0(x)
            x1 = self.e1(x0)
            x2 = self.e2(x1)
            x3 = self.e3(x2)
            y = self._up(x3, x2, 2)
            y = self._up(y, x1, 1)
            y = self._up(y, x0, 0)
            return self.head(y)

        def forward(self, x):
            return torch.sigmoid(self.logits(x))

    return LumenUNet()


def fold_batchnorm(model):
    """Conv + BatchNorm pairs fused into one Conv (eval mode), so the graph is plain Conv/ReLU."""
    import torch.nn as nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for module in model.modules():
        if isinstance(module, nn.Sequential) and len(module) == 3 and isinstance(module[1], nn.BatchNorm2d):
            module[0] = fuse_conv_bn_eval(module[0], module[1])
            module[1] = nn.Identity()
    return model


def _usgra_first(tag: str) -> int:
    """Vessel model batches: usgra images (pool 0) and phantom/negative frames (pool 1)."""
    return 0 if tag.startswith("usgra") else 1


def _usgra_phantom_score(v: dict) -> float:
    return 0.5 * v.get("usgra", 0) + 0.5 * v.get("phantom", 0)


def train(data: dict, *, out: Path, minutes: float, crop: int, batch: int, seed: int, threads: int,
          arch: dict | None = None, pool_of=_usgra_first, batch_pools: tuple[int, ...] = (0, 1),
          score_of=_usgra_phantom_score) -> dict:
    """Train, keep the best validation score, export. ``pool_of(tag)`` puts each training sample in
    a pool; batch item ``b`` is drawn from pool ``batch_pools[b % len(batch_pools)]`` (the vessel
    model: half usgra, half phantom/negative). ``score_of``: validation score from the per-kind
    pixel Dice (``negative``: false-positive pixel count) of ``validate``."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    arch = {**ARCH, **(arch or {})}
    model = build_model(tuple(arch["channels"]), decoder=arch["decoder"], e0_convs=int(arch["e0_convs"]))
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    train_set, val_set = data["train"], data["val"]
    pools: dict[int, list[int]] = {}
    for i, s in enumerate(train_set):
        pools.setdefault(pool_of(s[2]), []).append(i)

    # fixed validation crops: whole images padded to a multiple of 16
    def pad16(a):
        h, w = a.shape
        return np.pad(a, ((0, -h % 16), (0, -w % 16)))

    def validate() -> dict:
        model.eval()
        stats = {}
        with torch.no_grad():
            for x, y, tag in val_set:
                kind = tag.split(":")[0]
                xp = torch.from_numpy(pad16(x))[None, None]
                p = F.interpolate(model.logits(xp), scale_factor=2.0, mode="bilinear", align_corners=False)
                p = torch.sigmoid(p)[0, 0].numpy()[: x.shape[0], : x.shape[1]]
                pb, yb = p >= 0.5, y >= 0.5
                s = stats.setdefault(kind, [0.0, 0.0, 0.0])
                s[0] += float(np.count_nonzero(pb & yb))
                s[1] += float(np.count_nonzero(pb) + np.count_nonzero(yb))
                s[2] += float(np.count_nonzero(pb & ~yb)) if kind == "negative" else 0.0
        model.train()
        return {k: (2 * v[0] / v[1] if v[1] else 1.0) if k != "negative" else v[2] for k, v in stats.items()}

    t_end = time.time() + 60 * minutes
    step, best, best_state, history = 0, -1.0, None, []
    total_steps_guess = None
    t0 = time.time()
    model.train()
    while time.time() < t_end:
        xs, ys = [], []
        for b in range(batch):
            pool = pools[batch_pools[b % len(batch_pools)]]
            x, y, _ = train_set[pool[int(rng.integers(0, len(pool)))]]
            cx, cy = random_crop(x, y, rng, crop, augment=True)
            xs.append(cx)
            ys.append(cy)
        xb = torch.from_numpy(np.stack(xs)[:, None])
        yb = torch.from_numpy(np.stack(ys)[:, None])
        logits = F.interpolate(model.logits(xb), scale_factor=2.0, mode="bilinear", align_corners=False)
        bce = F.binary_cross_entropy_with_logits(logits, yb, pos_weight=torch.tensor(3.0))
        p = torch.sigmoid(logits)
        dice = 1 - (2 * (p * yb).sum() + 1) / (p.sum() + yb.sum() + 1)
        loss = bce + dice
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if total_steps_guess is None and step == 20:
            per_step = (time.time() - t0) / 20
            total_steps_guess = int(60 * minutes / per_step)
            print(f"{per_step * 1000:.0f} ms/step, ~{total_steps_guess} steps", file=sys.stderr)
        # cosine decay over the training time (a step count guessed from the first steps left the
        # rate high to the end when other processes slowed the later steps)
        frac = min((time.time() - t0) / (60 * minutes), 1.0)
        for g in opt.param_groups:
            g["lr"] = 3e-3 * (0.03 + 0.97 * 0.5 * (1 + np.cos(np.pi * frac)))
        if step % 200 == 0:
            v = validate()
            score = score_of(v)
            history.append({"step": step, "loss": float(loss), **v})
            print(f"step {step} loss {float(loss):.3f} val {v} score {score:.3f}", file=sys.stderr)
            if score > best:
                best = score
                best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    final = validate()
    export(model, out, meta={**data.get("meta", META), "arch": {**arch, "channels": list(arch["channels"])}})
    return {"params": n_params, "steps": step, "minutes": minutes, "best_val_score": best, "val": final,
            "history": history[-5:]}


def export(model, out: Path, *, meta: dict | None = None) -> None:
    import torch

    class Export(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x)

    model = fold_batchnorm(model.eval())
    out.parent.mkdir(parents=True, exist_ok=True)
    # no dynamic_axes: OpenCV 4.x's ONNX importer fails on symbolic height/width ("findCommonShape"
    # at the decoder's Add), while a fixed nominal size is reshaped to any input by 4.x and 5.x alike
    torch.onnx.export(Export(model), torch.zeros(1, 1, 64, 64), str(out), input_names=["x"], output_names=["p"],
                      opset_version=13, do_constant_folding=True, dynamo=False)
    out.with_suffix(".json").write_text(json.dumps(meta or META, indent=1) + "\n")
    # OpenCV must load it and agree with torch
    net = cv2.dnn.readNetFromONNX(str(out))
    x = np.random.default_rng(0).random((1, 1, 96, 128), dtype=np.float32)
    net.setInput(x)
    got = net.forward()
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    err = float(np.abs(got - ref).max())
    print(f"exported {out} ({out.stat().st_size} bytes); OpenCV vs torch max difference {err:.2e}", file=sys.stderr)
    if err > 1e-3:
        raise SystemExit("OpenCV output differs from PyTorch")


# ----------------------------------------------------------------------------- evaluation (project venv)

def score_usgra(folder: Path, names: list[str], detect) -> dict:
    """The rule of ``tools/eval_tracking.py --usgra`` (:func:`iousguide.evaluation.score_vessel_images`)."""
    from iousguide.evaluation import score_vessel_images

    return score_vessel_images(folder, names, detect)


def evaluate(usgra: Path, *, part: str, model: Path, tracker: bool, overrides: dict) -> dict:
    """Score the model alone (``learned_lumens``) or the tracker on one usgra part."""
    from iousguide.analysis.learned import learned_lumens

    names = sorted(p.name for p in (usgra / "images").glob("*.png"))
    chosen = usgra_split(names)[part] if part != "rest" else usgra_split(names)["train"] + usgra_split(names)["val"]
    if tracker:
        from iousguide.analysis.settings import TrackingSettings
        from iousguide.analysis.tracker import Tracker
        from iousguide.frames import Frame

        def detect(img):
            res = Tracker(TrackingSettings(auto_tumor=False, **overrides)).process(
                Frame(pixels=img, index=0, t_mono_ns=0, spacing_mm=None))
            return [(v.contour_px, v.centroid_px) for v in res.vessels]
    else:
        def detect(img):
            return [(lum.contour_px, lum.centroid_px) for lum in learned_lumens(img, spacing_mm=None, model_path=model,
                                                                               **overrides)]
    t0 = time.process_time()
    out = score_usgra(usgra, chosen, detect)
    out.update(part=part, detector="tracker" if tracker else "model", overrides=overrides,
               cpu_ms_per_image=1000 * (time.process_time() - t0) / max(len(chosen), 1))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="build the training arrays (project venv, no torch)")
    p.add_argument("--usgra", type=Path, default=REPO.parent / "shared" / "data" / "vessels_usgra")
    p.add_argument("--train-seeds", type=int, default=320, help="phantom training frames (seeds from 8200)")
    p.add_argument("--val-seeds", type=int, default=40, help="phantom validation frames (seeds from 8800)")
    p.add_argument("--input-px-mm", type=float, default=META["input_px_mm"], help="model grid pixel size")
    p.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("train", help="train and export ONNX (needs torch)")
    t.add_argument("--data", type=Path, required=True)
    t.add_argument("--out", type=Path, default=REPO / "iousguide" / "models" / "vessel_lumen.onnx")
    t.add_argument("--minutes", type=float, default=20.0)
    t.add_argument("--crop", type=int, default=96, help="training crop side, model-grid pixels (96 x 0.4 mm)")
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--channels", default=",".join(map(str, ARCH["channels"])), help="encoder widths, 4 levels")
    t.add_argument("--decoder", choices=("add", "cat"), default=ARCH["decoder"])
    t.add_argument("--e0-convs", type=int, choices=(1, 2), default=ARCH["e0_convs"])
    e = sub.add_parser("evaluate", help="score on a usgra part (project venv): the model alone or the tracker")
    e.add_argument("--usgra", type=Path, default=REPO.parent / "shared" / "data" / "vessels_usgra")
    e.add_argument("--part", choices=("train", "val", "rest", "holdout"), default="val",
                   help="holdout: only once, for the final report")
    e.add_argument("--model", type=Path, default=REPO / "iousguide" / "models" / "vessel_lumen.onnx")
    e.add_argument("--tracker", action="store_true", help="score the tracker (TrackingSettings) instead")
    e.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="learned_lumens keyword (model) or TrackingSettings field (tracker); numbers or true/false")
    args = ap.parse_args(argv)
    if args.cmd == "prepare":
        save_data(prepare(args.usgra, n_train_seeds=args.train_seeds, n_val_seeds=args.val_seeds,
                          input_px_mm=args.input_px_mm), args.out)
        return 0
    if args.cmd == "evaluate":
        overrides = {}
        for item in args.set:
            name, _, value = item.partition("=")
            overrides[name] = {"true": True, "false": False}.get(value.lower(), None)
            if overrides[name] is None:
                overrides[name] = float(value) if "." in value else int(value)
        print(json.dumps(evaluate(args.usgra, part=args.part, model=args.model, tracker=args.tracker,
                                  overrides=overrides)))
        return 0
    arch = {"channels": tuple(int(c) for c in args.channels.split(",")), "decoder": args.decoder,
            "e0_convs": args.e0_convs}
    report = train(load_data(args.data), out=args.out, minutes=args.minutes, crop=args.crop, batch=args.batch,
                   seed=args.seed, threads=args.threads, arch=arch)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
