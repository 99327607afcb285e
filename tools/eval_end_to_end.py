"""End-to-end check of tracking + guidance on the six bundled recordings (issues 5 and 6).

    python tools/eval_end_to_end.py [--out-dir out/e2e] [--recordings NAME ...] [--modality RFA|MWA]

Runs ``iousguide analyze`` exactly as a user would (the CLI entry point, in-process, each
recording with its own calibration preset), scores every result file with the official
harness (``iousguide.evaluation``), and prints:

* the official per-recording table (tumour Dice, vessel recall/precision, distance and
  diameter errors, id switches, heat-sink agreement);
* the heat-sink agreement pooled over all recordings (issue 6 asks for >= 95 % of
  vessel-frames) with its confusion counts;
* the issue-6 scenario checks, computed from the result files:
  hepatic_vein_abutting — frames with a detachment segment against a hepatic vein, and the
  smallest margin of every non-detachment segment (must stay >= the floor);
  free_parenchyma — frames whose plan is a uniform target-margin line (all segments
  ``free`` at the target);
  portal_pedicle — vessel-frames of portal pedicles classed ``high`` and their bioheat
  deficit;
  small_vessels — vessel-frames classed ``none``.

Nothing here is tuned: it only runs the product and counts.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORDINGS = ("free_parenchyma.mp4", "hepatic_vein_abutting.mp4", "occult_lesion.igs.mha",
              "portal_pedicle.dcm", "small_vessels.mp4", "two_lesions_screen.mp4")


def stem(name: str) -> str:
    return name.split(".")[0]


def run_analyze(recording: Path, out: Path, extra: list[str]) -> float:
    """Run the CLI; returns wall seconds. Raises SystemExit on a CLI failure."""
    from iousguide.cli import main

    argv = ["analyze", str(recording), "--out", str(out), "--no-progress"]
    preset = ROOT / "calibration" / f"{stem(recording.name)}.toml"
    if preset.exists():
        argv += ["--calibration", str(preset)]
    t0 = time.perf_counter()
    code = main(argv + extra)
    if code != 0:
        raise SystemExit(f"iousguide analyze {recording.name} failed with exit code {code}")
    return time.perf_counter() - t0


def scenario_checks(name: str, results: list[dict]) -> str:
    planned = [r for r in results if r.get("margin_plan")]
    if name == "hepatic_vein_abutting":
        detach = 0
        smallest = []
        for r in planned:
            kinds = {v["id"]: v.get("kind") for v in r.get("vessels", [])}
            segs = r["margin_plan"]["segments"]
            if any(s["reason"] == "detachment" and kinds.get(s.get("vessel_id")) == "hepatic_vein" for s in segs):
                detach += 1
            other = [s["margin_mm"] for s in segs if s["reason"] != "detachment"]
            if other:
                smallest.append(min(other))
        low = min(smallest) if smallest else None
        return (f"detachment against a hepatic vein in {detach}/{len(planned)} planned frames; "
                f"smallest non-detachment margin {low if low is None else round(low, 3)} mm")
    if name == "free_parenchyma":
        uniform = sum(
            1 for r in planned
            if all(s["reason"] == "free" and abs(s["margin_mm"] - r["margin_plan"]["target_mm"]) < 1e-6
                   for s in r["margin_plan"]["segments"])
        )
        return f"uniform target-margin line in {uniform}/{len(planned)} planned frames"
    if name == "portal_pedicle":
        classes, deficits = {}, []
        for r in results:
            for v in r.get("vessels", []):
                if v.get("kind") == "portal_pedicle" and v.get("heat_sink"):
                    c = v["heat_sink"]["class"]
                    classes[c] = classes.get(c, 0) + 1
                    if c == "high" and v["heat_sink"].get("deficit_mm") is not None:
                        deficits.append(v["heat_sink"]["deficit_mm"])
        med = round(statistics.median(deficits), 2) if deficits else None
        return f"portal-pedicle vessel-frames by class {classes}; median bioheat deficit when high {med} mm"
    if name == "small_vessels":
        classes = {}
        for r in results:
            for v in r.get("vessels", []):
                if v.get("heat_sink"):
                    classes[v["heat_sink"]["class"]] = classes.get(v["heat_sink"]["class"], 0) + 1
        return f"vessel-frames by heat-sink class {classes}"
    return ""


def borderline_counts(results: list[dict], truth, modality: str) -> tuple[int, int, int]:
    """(disagreements, of which flagged borderline, borderline among agreements) over matched vessels."""
    from iousguide.evaluation import match_vessels

    by_frame = {int(r["frame"]): r for r in results}
    wrong = wrong_flagged = right_flagged = 0
    for tf in truth.frames:
        rf = by_frame.get(int(tf["frame"]))
        if rf is None or tf.get("status") == "no_signal":
            continue
        rv_list, tv_list = rf.get("vessels", []), tf.get("vessels", [])
        for i, j in match_vessels(rv_list, tv_list):
            hs, ths = rv_list[i].get("heat_sink"), tv_list[j].get("heat_sink")
            if not (isinstance(hs, dict) and hs.get("class") and ths):
                continue
            same = hs["class"] == ths.get(modality)
            flagged = bool(hs.get("borderline"))
            wrong += not same
            wrong_flagged += (not same) and flagged
            right_flagged += same and flagged
    return wrong, wrong_flagged, right_flagged


def main(argv: list[str] | None = None) -> int:
    from iousguide.evaluation import evaluate_results, format_table, load_results, truth_path_for
    from iousguide.phantom import read_truth

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", default=str(ROOT / "out" / "e2e"))
    ap.add_argument("--recordings", nargs="*", default=list(RECORDINGS))
    ap.add_argument("--modality", choices=("RFA", "MWA"), default="RFA")
    ap.add_argument("--analyze-arg", action="append", default=[], metavar="ARG",
                    help="extra argument passed to `iousguide analyze` (repeat it; e.g. --analyze-arg=--learned-vessels)")
    args = ap.parse_args(argv)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    agree = total = 0
    wrong = wrong_flagged = right_flagged = 0
    confusion: dict[str, int] = {}
    for name in args.recordings:
        recording = ROOT / "recordings" / name
        out = out_dir / f"{stem(name)}.jsonl"
        with contextlib.redirect_stderr(io.StringIO()):
            wall_s = run_analyze(recording, out, ["--modality", args.modality, *args.analyze_arg])
        results = load_results(out)
        truth = read_truth(truth_path_for(recording))
        report = evaluate_results(results, truth, modality=args.modality.lower())
        print(format_table(report))
        for key, n in report["heat_sink"]["confusion"].items():  # "truth->result": count
            confusion[key] = confusion.get(key, 0) + n
            total += n
            agree += n if key.split("->")[0] == key.split("->")[1] else 0
        counts = borderline_counts(results, truth, args.modality.lower())
        wrong, wrong_flagged, right_flagged = (a + b for a, b in zip((wrong, wrong_flagged, right_flagged), counts))
        check = scenario_checks(stem(name), results)
        print(f"  [{stem(name)}] {len(results)} frames in {wall_s:.1f} s" + (f"; {check}" if check else ""))
        print()
    pooled = agree / total if total else float("nan")
    print(f"heat-sink agreement pooled ({args.modality}): {pooled:.3f} ({agree}/{total} vessel-frames); "
          f"confusion truth->result {json.dumps(dict(sorted(confusion.items())))}")
    print(f"disagreements flagged borderline by the uncertainty band: {wrong_flagged}/{wrong}; "
          f"agreements flagged borderline: {right_flagged}/{total - wrong}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
