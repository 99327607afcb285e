#!/usr/bin/env python3
"""Generate the six bundled phantom recordings, their truth and calibration presets.

Usage::

    python tools/make_recordings.py              # writes recordings/ and calibration/
    python tools/make_recordings.py --only two_lesions
    python tools/make_recordings.py --check      # regenerate into a temp folder, compare with recordings/MANIFEST.json
    python tools/make_recordings.py --random 9001 9002 --difficulty hard --out /tmp/fresh --calibration-dir /tmp/fresh
                                                 # fresh random cases (never used for tuning) as mp4 + truth + preset

Reproducibility: every recording is rendered from its seed; ``MANIFEST.json``
keeps the SHA-256 of the raw frames before encoding (``raw_sha256``), of the
frames decoded back from the written file (``decoded_sha256``), of the truth
file and of the media file. ``--check`` compares all four.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from iousguide.calibration import Calibration  # noqa: E402
from iousguide.phantom import CaseTruth, scenarios, write_truth  # noqa: E402

#: scenario -> output file name; the default recording (``iousguide replay`` with no arguments) first
OUTPUTS = {
    "hepatic_vein_abutting": "hepatic_vein_abutting.mp4",
    "free_parenchyma": "free_parenchyma.mp4",
    "portal_pedicle": "portal_pedicle.dcm",
    "small_vessels": "small_vessels.mp4",
    "occult_lesion": "occult_lesion.igs.mha",
    "two_lesions": "two_lesions_screen.mp4",
}
DEFAULT_RECORDING = "hepatic_vein_abutting.mp4"
H264_CRF = 30


def stem_of(filename: str) -> str:
    for suffix in (".igs.mha", ".mp4", ".dcm"):
        if filename.endswith(suffix):
            return filename[: -len(suffix)]
    return Path(filename).stem


def write_mp4(path: Path, frames: list[np.ndarray], fps: float) -> None:
    """H.264 (libx264, CRF 30, yuv420p, single thread for determinism) through PyAV; grey stored in luma."""
    import av
    from fractions import Fraction

    height, width = frames[0].shape[:2]
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        stream.options = {"crf": str(H264_CRF), "preset": "medium", "x264-params": "threads=1:bframes=0"}
        for i, px in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(px), format="gray")
            frame = frame.reformat(format="yuv420p")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def decode_grey(path: Path) -> list[np.ndarray]:
    """Decode a written recording back to grey frames with iousguide's own readers."""
    from iousguide.acquisition import open_source

    out = []
    with open_source(path) as source:
        source.set_calibration(preset=None, spacing_mm=None)
        for index in range(len(source)):
            frame = source._load(index)  # uncropped source pixels
            out.append(np.asarray(frame.gray))
    return out


def write_recording(name: str, filename: str, out_dir: Path, calib_dir: Path) -> dict:
    return write_case(scenarios.build(name), filename, out_dir, calib_dir)


def write_case(case, filename: str, out_dir: Path, calib_dir: Path) -> dict:
    """Render a case, write the media file, its truth and its calibration preset; return the manifest entry."""
    name = case.name
    t0 = time.perf_counter()
    frames, truth = [], CaseTruth(header=case.header())
    for _, pixels, frame_truth in scenarios.render(case):
        frames.append(pixels)
        truth.frames.append(frame_truth)
    render_s = time.perf_counter() - t0
    path = out_dir / filename
    spacing = case.geometry.spacing_mm
    ox, oy = case.offset_px
    region = (ox, oy, case.geometry.width_px, case.geometry.height_px)
    if filename.endswith(".mp4"):
        write_mp4(path, frames, case.fps)
    elif filename.endswith(".dcm"):
        from iousguide.acquisition.dicom_writer import write_us_cine

        write_us_cine(path, frames, spacing_mm=spacing, fps=case.fps, region_px=region, compression="rle",
                      seed=case.seed, series_description=f"iousguide phantom: {name}")
    elif filename.endswith(".igs.mha"):
        from iousguide.acquisition.plus_writer import SequenceWriter
        from iousguide.frames import Frame

        path.unlink(missing_ok=True)
        writer = SequenceWriter(path, orientation="MF", spacing_mm=spacing, compress=True)
        for i, px in enumerate(frames):
            writer.append(Frame(pixels=px, index=i, t_mono_ns=0, t_source_s=round(1000.0 + i / case.fps, 6),
                                spacing_mm=spacing))
        writer.close()
    else:
        raise ValueError(filename)
    truth_path = out_dir / f"{stem_of(filename)}.truth.jsonl.gz"
    write_truth(truth_path, truth)
    preset = Calibration(
        spacing_mm=spacing, crop_px=region if case.screen else None, name=f"phantom-{name}", source="preset",
        scanner="iousguide phantom", probe=f"{case.geometry.kind} 7.5 MHz", depth_mm=round(case.geometry.max_depth_mm, 2),
        notes=f"exact: phantom recording {filename} rendered at this spacing (tools/make_recordings.py)",
    )
    (calib_dir / f"{stem_of(filename)}.toml").write_text(preset.to_toml(), encoding="utf-8")
    decoded = decode_grey(path)
    if len(decoded) != len(frames):
        raise RuntimeError(f"{filename}: decoded {len(decoded)} frames, wrote {len(frames)}")
    err = [float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16)))) for a, b in zip(frames, decoded)]
    return {
        "file": filename, "scenario": name, "seed": case.seed, "frames": len(frames), "fps": case.fps,
        "size_px": list(case.frame_size_px), "spacing_mm": list(spacing), "probe": case.geometry.kind,
        "us_region_px": list(region), "description": case.description,
        "raw_sha256": scenarios.pixels_sha256(frames),
        "decoded_sha256": scenarios.pixels_sha256(decoded),
        "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "truth_sha256": hashlib.sha256(truth_path.read_bytes()).hexdigest(),
        "file_bytes": path.stat().st_size, "truth_bytes": truth_path.stat().st_size,
        "mean_abs_codec_error_grey": round(float(np.mean(err)), 3),
        "render_s": round(render_s, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=sorted(OUTPUTS), help="only this scenario (repeatable)")
    parser.add_argument("--out", type=Path, default=ROOT / "recordings")
    parser.add_argument("--calibration-dir", type=Path, default=ROOT / "calibration")
    parser.add_argument("--check", action="store_true", help="regenerate into a temporary folder and compare hashes")
    parser.add_argument("--random", type=int, nargs="+", metavar="SEED",
                        help="instead: write fresh random cases (generate_case) as mp4 + truth + preset into --out")
    parser.add_argument("--difficulty", default="medium", help="for --random: easy, medium, hard or 0..1")
    parser.add_argument("--frames", type=int, default=90, help="for --random: frames per case (15 fps)")
    parser.add_argument("--probe", choices=("linear", "convex"), default=None, help="for --random (default: random)")
    args = parser.parse_args(argv)
    if args.random:
        difficulty = float(args.difficulty) if args.difficulty.replace(".", "", 1).isdigit() else args.difficulty
        args.out.mkdir(parents=True, exist_ok=True)
        args.calibration_dir.mkdir(parents=True, exist_ok=True)
        for seed in args.random:
            case = scenarios.random_case(seed, difficulty=difficulty, n_frames=args.frames, probe=args.probe)
            entry = write_case(case, f"random_{seed}.mp4", args.out, args.calibration_dir)
            print(f"{entry['file']}: {case.description}, spacing {case.geometry.spacing_mm[0]:.3f} mm/px")
        return 0
    names = args.only or list(OUTPUTS)
    manifest_path = args.out / "MANIFEST.json"
    old = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"recordings": {}}
    if args.check:
        failures = 0
        with tempfile.TemporaryDirectory() as tmp:
            for name in names:
                entry = write_recording(name, OUTPUTS[name], Path(tmp), Path(tmp))
                ref = old["recordings"].get(OUTPUTS[name], {})
                for key in ("raw_sha256", "decoded_sha256", "truth_sha256", "file_sha256"):
                    same = ref.get(key) == entry[key]
                    failures += not same
                    print(f"{OUTPUTS[name]:<28} {key:<15} {'identical' if same else 'DIFFERENT'}")
        return 1 if failures else 0
    args.out.mkdir(parents=True, exist_ok=True)
    args.calibration_dir.mkdir(parents=True, exist_ok=True)
    recordings = old.get("recordings", {})
    for name in names:
        entry = write_recording(name, OUTPUTS[name], args.out, args.calibration_dir)
        recordings[entry["file"]] = entry
        print(f"{entry['file']:<28} {entry['frames']:4d} frames  {entry['file_bytes'] / 1e6:6.2f} MB  "
              f"truth {entry['truth_bytes'] / 1e3:6.0f} kB  render {entry['render_s']:6.1f} s  "
              f"codec error {entry['mean_abs_codec_error_grey']:.2f} grey", flush=True)
    manifest = {"default": DEFAULT_RECORDING, "generator": "tools/make_recordings.py",
                "recordings": {k: recordings[k] for k in OUTPUTS.values() if k in recordings}}
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    total = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file())
    print(f"recordings/ total {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
