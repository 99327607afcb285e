"""Train the learned lesion model (iousguide/models/lesion.onnx): a lesion probability per pixel.

The same two stages, network and export as ``tools/train_vessel_model.py`` (whose functions are
used here); only the data and the batch mix differ:

1. ``prepare`` (project venv): phantom frames ``iousguide.phantom.generate_case`` with seeds
   20000-20499 (training; ``--frames`` sections of each sweep, random difficulty, probe, size and
   spacing) and 20500-20549 (validation), the target being every lesion's true outline filled
   (all five appearances; a calcified lesion's outline includes the part hidden in its shadow,
   as the truth defines it). Negatives, so the model learns that most tissue holds no lesion:
   the real usgra-seg images (training and validation parts only; the held-out part, index % 4
   == 3, is never read) - real vessels, nerves, muscle and fat, no liver lesion - and all-black
   and uniform-speckle frames. None of these seeds was used to develop or evaluate the tracker
   (development 8000-8899 and 10100-10129, fresh sets 9000-10599).

   ``.venv/bin/python tools/train_lesion_model.py prepare --out /tmp/lesion_data.npz``

2. ``train`` (the torch venv of the vessel model's card)::

   /work/trainenv/bin/python tools/train_lesion_model.py train --data /tmp/lesion_data.npz

   Batches: three phantom crops to one negative crop; the kept checkpoint is the best validation
   phantom pixel Dice less a penalty for false lesion pixels on the negatives.

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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import train_vessel_model as tv  # noqa: E402

#: model grid and normalisation (the vessel model's); ``peak_threshold``: a lesion needs a peak this high
META = {**tv.META, "threshold": 0.5, "peak_threshold": 0.8}
ARCH = {"channels": (8, 16, 24, 32), "decoder": "add", "e0_convs": 1}
TRAIN_SEEDS = range(20000, 20500)
VAL_SEEDS = range(20500, 20550)
OUT = REPO / "iousguide" / "models" / "lesion.onnx"


def phantom_sections(seed: int, n_frames: int):
    """``n_frames`` sections of one random phantom sweep: (input, lesion target, tag) each."""
    from iousguide.phantom import generate_case

    rng = np.random.default_rng([seed, 91])
    difficulty = float(rng.uniform(0.0, 1.0))
    width, height = [(640, 480), (800, 600), (512, 512)][int(rng.integers(0, 3))]
    frames, truth = generate_case(seed, difficulty=difficulty, n_frames=n_frames, width_px=width, height_px=height)
    for k, (frame, tf) in enumerate(zip(frames, truth.frames)):
        gray = np.ascontiguousarray(frame.gray)
        mask = np.zeros(gray.shape, np.uint8)
        for t in tf.get("tumors") or ([tf["tumor"]] if tf.get("tumor") else []):
            for c in [t.get("contour_px")] + list(t.get("contours_px") or []):
                if c is not None and len(c) >= 3:
                    cv2.fillPoly(mask, [np.round(np.asarray(c) * 16).astype(np.int32)], 1, shift=4)
        yield (*tv.to_grid(gray, mask.astype(bool), spacing_mm=frame.spacing_mm), f"phantom:{seed}:{k}")


def prepare(usgra: Path, *, n_train_seeds: int, n_val_seeds: int, frames_per_seed: int) -> dict:
    names = sorted(p.name for p in (usgra / "images").glob("*.png"))
    if not names:
        raise SystemExit(f"no usgra images under {usgra / 'images'}")
    split = tv.usgra_split(names)
    data = {"train": [], "val": [], "meta": dict(META)}
    t0 = time.time()
    for seed in list(TRAIN_SEEDS)[:n_train_seeds]:
        data["train"] += list(phantom_sections(seed, frames_per_seed))
    for seed in list(VAL_SEEDS)[:n_val_seeds]:
        data["val"] += list(phantom_sections(seed, frames_per_seed))
    t_phantom = time.time() - t0
    # real images hold no liver lesion: whole-image negatives (held-out part never read)
    for part, names_part in (("train", split["train"]), ("val", split["val"])):
        for x, _, tag in tv.usgra_samples(usgra, names_part):
            data[part].append((x, np.zeros_like(x), f"negative:{tag}"))
    data["train"] += list(tv.negative_samples(12, 1))
    data["val"] += list(tv.negative_samples(3, 2))
    print(f"prepared {len(data['train'])} training and {len(data['val'])} validation samples "
          f"(phantoms in {t_phantom:.0f} s)", file=sys.stderr)
    return data


def _pool(tag: str) -> int:
    return 0 if tag.startswith("phantom") else 1


def _score(v: dict) -> float:
    # phantom pixel Dice, less 0.01 per 100 false lesion pixels (0.8 mm model pixels) on the
    # validation negatives (29 real images, 3 synthetic)
    return v.get("phantom", 0.0) - 1e-4 * v.get("negative", 0.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="build the training arrays (project venv, no torch)")
    p.add_argument("--usgra", type=Path, default=REPO.parent / "shared" / "data" / "vessels_usgra")
    p.add_argument("--train-seeds", type=int, default=500)
    p.add_argument("--val-seeds", type=int, default=50)
    p.add_argument("--frames", type=int, default=4, help="sections per phantom sweep")
    p.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("train", help="train and export ONNX (needs torch)")
    t.add_argument("--data", type=Path, required=True)
    t.add_argument("--out", type=Path, default=OUT)
    t.add_argument("--minutes", type=float, default=20.0)
    t.add_argument("--crop", type=int, default=128, help="training crop side, model-grid pixels (128 x 0.4 mm)")
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if args.cmd == "prepare":
        tv.save_data(prepare(args.usgra, n_train_seeds=args.train_seeds, n_val_seeds=args.val_seeds,
                             frames_per_seed=args.frames), args.out)
        return 0
    report = tv.train(tv.load_data(args.data), out=args.out, minutes=args.minutes, crop=args.crop,
                      batch=args.batch, seed=args.seed, threads=args.threads, arch=dict(ARCH), pool_of=_pool,
                      batch_pools=(0, 0, 0, 1), score_of=_score)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
