#!/usr/bin/env python3
"""Contact sheet per recording: frames decoded from the file with their truth drawn on them.

Usage::

    python tools/contact_sheet.py                    # every recording in recordings/MANIFEST.json -> out/contact_sheets/
    python tools/contact_sheet.py recordings/two_lesions_screen.mp4 --frames 8 --out /tmp/sheets

Drawn: tumour outlines (green; primary thick), vessel lumens (cyan = hepatic vein,
yellow = portal pedicle) with id, diameter and heat-sink class (RFA), the closest
point pair tumour -> vessel (red) with the distance, and the frame status.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from iousguide.acquisition import open_source  # noqa: E402
from iousguide.evaluation import truth_path_for  # noqa: E402
from iousguide.phantom import read_truth  # noqa: E402

COLORS = {"hepatic_vein": (255, 220, 0), "portal_pedicle": (0, 220, 255), "tumor": (60, 230, 60), "pair": (40, 40, 255)}


def _poly(canvas, points, color, thickness=1):
    p = np.round(np.asarray(points, float) * 4).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(canvas, [p], True, color, thickness, cv2.LINE_AA, shift=2)


def draw_truth(grey: np.ndarray, truth_frame: dict) -> np.ndarray:
    """BGR copy of a grey frame with the truth drawn on it."""
    canvas = cv2.cvtColor(np.ascontiguousarray(grey), cv2.COLOR_GRAY2BGR)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for tumor in truth_frame.get("tumors") or []:
        for poly in [tumor["contour_px"]] + tumor.get("contours_px", []):
            _poly(canvas, poly, COLORS["tumor"], 2 if tumor.get("primary") else 1)
        cx, cy = tumor["centroid_px"]
        cv2.putText(canvas, f"T{tumor['id']} {tumor['appearance']} {tumor['equivalent_diameter_mm']:.1f}mm",
                    (int(cx) - 40, int(cy)), font, 0.4, COLORS["tumor"], 1, cv2.LINE_AA)
    for v in truth_frame.get("vessels") or []:
        color = COLORS.get(v["kind"], (200, 200, 200))
        for poly in [v["contour_px"]] + v.get("contours_px", []):
            _poly(canvas, poly, color, 1)
        cx, cy = v["centroid_px"]
        hs = (v.get("heat_sink") or {}).get("rfa", "-")
        cv2.putText(canvas, f"{v['id']}:{v['diameter_mm']:.1f}mm {hs}", (int(cx) + 6, int(cy) - 4), font, 0.35, color,
                    1, cv2.LINE_AA)
        if v.get("closest_px") and v.get("distance_mm") is not None and v["distance_mm"] <= 15:
            (ax, ay), (bx, by) = v["closest_px"]
            cv2.line(canvas, (int(round(ax)), int(round(ay))), (int(round(bx)), int(round(by))), COLORS["pair"], 1,
                     cv2.LINE_AA)
            cv2.putText(canvas, f"{v['distance_mm']:.2f}", (int(bx) + 4, int(by) + 12), font, 0.35, COLORS["pair"], 1,
                        cv2.LINE_AA)
    label = f"frame {truth_frame['frame']}  {truth_frame['status']}"
    if truth_frame.get("min_distance_mm") is not None:
        label += f"  min {truth_frame['min_distance_mm']:.2f} mm"
    cv2.putText(canvas, label, (6, canvas.shape[0] - 8), font, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def contact_sheet(recording: Path, *, n_frames: int = 6, columns: int = 3, tile_width: int = 480) -> np.ndarray:
    truth = read_truth(truth_path_for(recording))
    frames = truth.frames
    picks = list(np.linspace(0, len(frames) - 1, n_frames).round().astype(int))
    lifts = [f["frame"] for f in frames if f["status"] == "no_signal"]
    if lifts and not any(p in lifts for p in picks):
        picks[-2] = lifts[0]
    tiles = []
    with open_source(recording) as source:
        for index in sorted(set(picks)):
            grey = np.asarray(source._load(index).gray)  # full source frame: truth is in source pixels
            tile = draw_truth(grey, frames[index])
            scale = tile_width / tile.shape[1]
            tiles.append(cv2.resize(tile, (tile_width, int(round(tile.shape[0] * scale))), interpolation=cv2.INTER_AREA))
    h = max(t.shape[0] for t in tiles)
    tiles = [np.pad(t, ((0, h - t.shape[0]), (0, 0), (0, 0))) for t in tiles]
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[i:i + columns]) for i in range(0, len(tiles), columns)]
    sheet = np.vstack(rows)
    title = np.zeros((28, sheet.shape[1], 3), np.uint8)
    cv2.putText(title, f"{recording.name}: {truth.header.get('description', '')}", (8, 19), cv2.FONT_HERSHEY_SIMPLEX,
                0.55, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([title, sheet])


def phantom_vs_real(real_video: Path, *, real_index: int = 70, real_spacing_mm: float = 0.3148) -> np.ndarray:
    """A real liver-sweep frame beside a phantom convex frame shown at the same mm/px (for looking, not for the repo)."""
    from iousguide.phantom import scenarios

    cap = cv2.VideoCapture(str(real_video))
    real = None
    for _ in range(real_index + 1):
        ok, real = cap.read()
        if not ok:
            break
    cap.release()
    if real is None:
        raise SystemExit(f"cannot read {real_video}")
    real = cv2.cvtColor(real, cv2.COLOR_BGR2GRAY)
    case = scenarios.build("small_vessels")
    for i, pixels, _ in scenarios.render(case, with_truth=False):
        if i == 40:
            break
    scale = case.geometry.spacing_mm[0] / real_spacing_mm
    small = cv2.resize(pixels, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    canvas = np.zeros((real.shape[0] + 30, real.shape[1] + small.shape[1] + 10), np.uint8)
    canvas[:real.shape[0], :real.shape[1]] = real
    canvas[:small.shape[0], real.shape[1] + 10:] = small
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(canvas, f"real liver sweep frame {real_index} (ImFusion, CC BY 4.0), {real_spacing_mm} mm/px",
                (5, real.shape[0] + 20), font, 0.45, 255, 1, cv2.LINE_AA)
    cv2.putText(canvas, "phantom small_vessels frame 40, same mm/px", (real.shape[1] + 15, small.shape[0] + 20), font,
                0.45, 255, 1, cv2.LINE_AA)
    native = np.hstack([real[100:400, 200:560], np.zeros((300, 10), np.uint8), pixels[100:400, 140:500]])
    return canvas, native


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recordings", nargs="*", type=Path, help="recording files (default: all in recordings/)")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "contact_sheets")
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--compare-real", type=Path, metavar="MP4",
                        help="also write phantom_vs_real.png: a frame of this real liver sweep beside a phantom frame")
    args = parser.parse_args(argv)
    if args.compare_real:
        args.out.mkdir(parents=True, exist_ok=True)
        same_scale, native = phantom_vs_real(args.compare_real)
        cv2.imwrite(str(args.out / "phantom_vs_real.png"), same_scale)
        cv2.imwrite(str(args.out / "phantom_vs_real_native.png"), native)
        print(args.out / "phantom_vs_real.png")
    paths = args.recordings
    if not paths:
        manifest = json.loads((ROOT / "recordings" / "MANIFEST.json").read_text())
        paths = [ROOT / "recordings" / name for name in manifest["recordings"]]
    args.out.mkdir(parents=True, exist_ok=True)
    for path in paths:
        sheet = contact_sheet(path, n_frames=args.frames)
        name = path.name.split(".")[0]
        out = args.out / f"{name}.png"
        cv2.imwrite(str(out), sheet)
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
