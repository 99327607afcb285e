"""The learned lesion model: loads with OpenCV (no torch), outlines a phantom lesion it never saw,
finds none in lesion-free images, and the tracker uses it only where the classical maps give no
lesion (same answers in its worker thread and in line)."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace

import cv2
import numpy as np
import pytest

from conftest import PROJECT_ROOT, shared_file
from iousguide.analysis.imaging import prepare
from iousguide.analysis.learned_lesion import LESION_MODEL_PATH, learned_lesion_candidates, lesion_probability
from iousguide.analysis.settings import TrackingSettings
from iousguide.analysis.tracker import Tracker
from iousguide.evaluation import dice, rasterize
from iousguide.phantom import generate_case
from iousguide.phantom.scenarios import random_case

#: development seeds (never trained on: the model's seeds are 20000-20549) of each bright kind
HYPERECHOIC_SEED = 8816
CALCIFIED_SEED = 8836


def _truth_mask(tf, shape):
    t = tf.get("tumor") or next(t for t in tf["tumors"] if t.get("primary"))
    return rasterize(t["contour_px"], shape)


@pytest.mark.parametrize("seed, appearance", [(HYPERECHOIC_SEED, "hyperechoic"), (CALCIFIED_SEED, "calcified")])
def test_outlines_a_bright_lesion_of_a_development_case(seed, appearance):
    assert appearance in random_case(seed, difficulty="medium", n_frames=1).description
    frames, truth = generate_case(seed, difficulty="medium", n_frames=12)
    frame, tf = frames[6], truth.frames[6]
    gray = np.ascontiguousarray(frame.gray)
    before = gray.copy()
    prob = lesion_probability(gray, spacing_mm=frame.spacing_mm)
    np.testing.assert_array_equal(gray, before)
    assert prob.dtype == np.float32 and 0.0 <= prob.min() and prob.max() <= 1.0
    s = TrackingSettings()
    prep = prepare(gray, spacing_mm=frame.spacing_mm, settings=s)
    cands = learned_lesion_candidates(prep, prob, settings=s)
    assert cands and all(c.learned for c in cands)
    truth_mask = _truth_mask(tf, gray.shape)
    best = 0.0
    for c in cands:
        mask = cv2.resize(c.mask_w.astype(np.uint8), gray.shape[::-1], interpolation=cv2.INTER_NEAREST).astype(bool)
        best = max(best, dice(mask, truth_mask))
    assert best >= 0.75, best


def test_no_lesion_on_black_or_uniform_speckle():
    rng = np.random.default_rng(5)
    speckle = cv2.GaussianBlur(rng.rayleigh(1.0, (480, 640)).astype(np.float32), (0, 0), 1.2)
    s = TrackingSettings()
    for gray in (np.zeros((480, 640), np.uint8), np.clip(speckle / speckle.mean() * 90, 0, 255).astype(np.uint8)):
        prep = prepare(gray, spacing_mm=(0.12, 0.12), settings=s)
        prob = lesion_probability(gray, spacing_mm=(0.12, 0.12))
        assert learned_lesion_candidates(prep, prob, settings=s) == []


def _usgra_split():
    spec = importlib.util.spec_from_file_location("train_vessel_model", PROJECT_ROOT / "tools" / "train_vessel_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    folder = shared_file("vessels_usgra")
    return folder, mod.usgra_split(sorted(p.name for p in (folder / "images").glob("*.png")))


def test_few_lesions_on_real_held_out_images_without_liver_lesions():
    """The usgra images (vessels, nerves, muscle; no liver lesion): the held-out part, never trained
    on, is all negatives. The model may find lesion-like structures on some, not on most."""
    folder, split = _usgra_split()
    s = TrackingSettings()
    hits = 0
    for name in split["holdout"]:
        gray = cv2.imread(str(folder / "images" / name), cv2.IMREAD_GRAYSCALE)
        prep = prepare(gray, spacing_mm=None, settings=s)
        hits += bool(learned_lesion_candidates(prep, lesion_probability(gray, spacing_mm=None), settings=s))
    assert hits <= 0.2 * len(split["holdout"]), (hits, len(split["holdout"]))


def test_model_is_small_and_loads_without_torch():
    assert LESION_MODEL_PATH.exists() and LESION_MODEL_PATH.stat().st_size < 1_000_000
    net = cv2.dnn.readNetFromONNX(str(LESION_MODEL_PATH))
    net.setInput(np.zeros((1, 1, 64, 96), np.float32))
    assert net.forward().shape == (1, 1, 32, 48)
    assert "torch" not in sys.modules


def _run(seed, *, in_worker: bool, learned: bool, n_frames: int = 12):
    frames, truth = generate_case(seed, difficulty="medium", n_frames=n_frames)
    tracker = Tracker(TrackingSettings(learned_lesions=learned))
    tracker.learned_in_worker = in_worker
    out = []
    for f in frames:
        d = tracker.process(f).to_json()
        d.pop("processing_ms", None)
        out.append(d)
    return out, frames, truth


def test_worker_thread_gives_the_in_line_answer():
    a, _, _ = _run(HYPERECHOIC_SEED, in_worker=True, learned=True, n_frames=6)
    b, _, _ = _run(HYPERECHOIC_SEED, in_worker=False, learned=True, n_frames=6)
    assert a == b
    assert all(r["status"] != "error" for r in a)


def test_learned_lesions_only_fill_frames_the_classical_maps_leave_empty(monkeypatch):
    """A hypoechoic development case the classical maps follow on every frame: the same answer with
    the model on (the model is used only where the classical candidates give nothing) when it
    outlines no dark lesion. (By default it does outline a dark lesion whose classical edge is
    faint - frames 0-1 of this case, 3.9-4.0 dB: see the test of faint lesions below.)"""
    import iousguide.analysis.tracker as tracker_module

    monkeypatch.setattr(tracker_module, "LEARNED_OUTLINE", "bright")
    seed = 8809
    assert "hypoechoic" in random_case(seed, difficulty="medium", n_frames=1).description
    off, _, _ = _run(seed, in_worker=False, learned=False, n_frames=8)
    on, _, _ = _run(seed, in_worker=False, learned=True, n_frames=8)
    assert all(r["tumor"] is not None for r in off)
    assert on == off


#: a hyperechoic development case the classical lesion maps cut on no frame
UNCUT_HYPERECHOIC_SEED = 8875


def _clicked(seed, *, learned: bool, n_frames: int = 8):
    frames, truth = generate_case(seed, difficulty="medium", n_frames=n_frames)
    t0 = truth.frames[0].get("tumor") or next(t for t in truth.frames[0]["tumors"] if t.get("primary"))
    tracker = Tracker(TrackingSettings(learned_lesions=learned, tumor_seed_px=tuple(t0["centroid_px"])))
    results = [tracker.process(f) for f in frames]
    dices = [0.0 if r.tumor is None else dice(rasterize(r.tumor.contour_px, f.shape), _truth_mask(tf, f.shape))
             for r, f, tf in zip(results, frames, truth.frames)]
    return results, dices


def test_a_click_on_a_lesion_the_classical_maps_miss_is_followed_on_the_model():
    assert "hyperechoic" in random_case(UNCUT_HYPERECHOIC_SEED, difficulty="medium", n_frames=1).description
    off, _ = _clicked(UNCUT_HYPERECHOIC_SEED, learned=False)
    assert all(r.tumor is None for r in off)
    on, dices = _clicked(UNCUT_HYPERECHOIC_SEED, learned=True)
    assert all(r.tumor is not None and r.tumor.outline == "learned" for r in on)
    assert on[0].to_json()["tumor"]["outline"] == "learned"
    assert min(dices) >= 0.8, dices


def test_the_model_proposes_on_its_own_only_a_focal_visible_lesion():
    """With no classical candidate agreeing, the model's lesion is proposed only where it is focal
    (no classical look-alike of the same echo that competes has more than half its score: on a real
    healthy liver its map holds lesion-like patches among the liver's own pattern) and visible (its
    echo differs from the tissue around it by the lesion map's 3 dB). The rule on candidates; the
    phantom case it was made for is test_a_focal_visible_lesion_only_the_model_sees_is_proposed."""
    import iousguide.analysis.tracker as tracker_module

    settings = TrackingSettings()
    lesion = np.zeros((200, 200), bool)
    lesion[40:80, 40:80] = True  # 12 mm square at 0.3 mm/px
    look_alike = np.zeros((200, 200), bool)
    look_alike[120:155, 120:155] = True
    learned = replace(_candidate(lesion, contrast_db=4.0), learned=True)
    assert tracker_module._focal_and_visible(learned, [], settings=settings)
    assert not tracker_module._focal_and_visible(replace(learned, contrast_db=2.3), [], settings=settings)
    rival = _candidate(look_alike, contrast_db=3.5)
    assert not tracker_module._focal_and_visible(learned, [rival], settings=settings)
    assert tracker_module._focal_and_visible(learned, [replace(rival, dark=True)], settings=settings)  # other echo
    assert tracker_module._focal_and_visible(learned, [replace(rival, contrast_db=0.5)], settings=settings)  # weak


#: development case (calcified) whose classical candidates are never plausible proposals: with the
#: model agreeing it is found (measured case Dice 0.26 -> 0.85 over 12 frames)
AGREED_CALCIFIED_SEED = 8833


def test_a_proposal_where_a_classical_candidate_agrees_with_the_model(monkeypatch):
    """tracker.LEARNED_PROPOSALS = "agree": a model component that a classical candidate overlaps is
    proposed (after the usual confirmation frames) where no classical candidate was plausible; with
    proposals off the same lesion is found on fewer frames. Every reported outline lies on it."""
    import iousguide.analysis.tracker as tracker_module

    frames, truth = generate_case(AGREED_CALCIFIED_SEED, difficulty="medium", n_frames=12)
    found = {}
    for mode in (False, "agree"):
        monkeypatch.setattr(tracker_module, "LEARNED_PROPOSALS", mode)
        tracker = Tracker(TrackingSettings(learned_lesions=True))
        dices = []
        for f, tf in zip(frames, truth.frames):
            r = tracker.process(f)
            if r.tumor is not None:
                dices.append(dice(rasterize(r.tumor.contour_px, f.gray.shape), _truth_mask(tf, f.gray.shape)))
        found[mode] = dices
    assert len(found["agree"]) >= len(found[False]) + 4, {k: len(v) for k, v in found.items()}
    assert min(found["agree"]) >= 0.6 and np.mean(found["agree"]) >= 0.8, found["agree"]


def _candidate(mask, *, dark=False, contrast_db=6.0):
    from iousguide.analysis.tumor import TumorCandidate

    ys, xs = np.nonzero(mask)
    return TumorCandidate(mask_w=mask, bbox_w=(int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1),
                          area_mm2=float(mask.sum()) * 0.09, centroid_w=(float(xs.mean()), float(ys.mean())),
                          dark=dark, contrast_db=contrast_db, solidity=1.0, touches_border=False, threshold_db=3.0)


def test_the_same_lesion_is_the_model_component_holding_the_classical_one():
    """A calcified lesion's classical candidate is its bright focus: a small part of the lesion the
    model outlines whole (IoU ~0.1, below LEARNED_FOLLOW_IOU). Held whole, it is the same lesion; a
    component merely touching it, or none overlapping, is not."""
    from iousguide.analysis.tracker import _learned_same_lesion

    yy, xx = np.mgrid[:200, :200]
    lesion = (xx - 100) ** 2 + (yy - 100) ** 2 <= 40 ** 2
    focus = (xx - 95) ** 2 + (yy - 90) ** 2 <= 12 ** 2
    elsewhere = (xx - 170) ** 2 + (yy - 170) ** 2 <= 15 ** 2
    grazing = (xx - 118) ** 2 + (yy - 90) ** 2 <= 15 ** 2  # overlaps the focus a little
    focus_c = _candidate(focus)
    assert np.count_nonzero(lesion & focus) / np.count_nonzero(lesion | focus) < 0.3
    same = _learned_same_lesion(focus_c, [_candidate(elsewhere), _candidate(lesion)])
    assert same is not None and same.mask_w is lesion
    assert _learned_same_lesion(focus_c, [_candidate(elsewhere)]) is None
    shared = np.count_nonzero(grazing & focus)
    assert 0 < shared < 0.3 * np.count_nonzero(grazing | focus) and shared < 0.8 * np.count_nonzero(focus)
    assert _learned_same_lesion(focus_c, [_candidate(grazing)]) is None


@pytest.mark.parametrize("dark, contrast_db, outlined", [(False, 6.0, "always"), (False, 2.0, "always"),
                                                        (True, 3.0, "if_edge_unsure"), (True, 5.0, None)])
def test_which_classical_candidates_the_model_outlines(dark, contrast_db, outlined):
    """Bright lesions always; dark ones whose classical edge contrast is faint (below
    LEARNED_FAINT_EDGE_DB) when their refined edge is no surer than the model's; others never."""
    from iousguide.analysis.tracker import _learned_outlines

    yy, xx = np.mgrid[:50, :50]
    assert _learned_outlines(_candidate((xx - 25) ** 2 + (yy - 25) ** 2 < 100, dark=dark,
                                        contrast_db=contrast_db)) == outlined


def _clicked_dice(seed, difficulty, mode, monkeypatch, n_frames, *, contains_fraction):
    import iousguide.analysis.tracker as tracker_module

    monkeypatch.setattr(tracker_module, "LEARNED_OUTLINE", mode)
    monkeypatch.setattr(tracker_module, "LEARNED_CONTAINS_FRACTION", contains_fraction)
    frames, truth = generate_case(seed, difficulty=difficulty, n_frames=n_frames)
    t0 = truth.frames[0].get("tumor") or next(t for t in truth.frames[0]["tumors"] if t.get("primary"))
    tracker = Tracker(TrackingSettings(tumor_seed_px=tuple(t0["centroid_px"])))
    results = [tracker.process(f) for f in frames]
    dices = [0.0 if r.tumor is None else dice(rasterize(r.tumor.contour_px, f.shape), _truth_mask(tf, f.shape))
             for r, f, tf in zip(results, frames, truth.frames)]
    return results, dices


#: development cases: a calcified lesion whose classical candidate is its bright focus alone
#: (medium 8008, 12 frames: frames 2-9), a faint hypoechoic lesion (hard 10115, -3.9 dB, classical
#: edge contrast 2.4-3.4 dB on frames 0-4)
@pytest.mark.parametrize("seed, difficulty, appearance, n_frames", [(8008, "medium", "calcified", 12),
                                                                    (10115, "hard", "hypoechoic", 12)])
def test_the_model_outlines_a_calcified_or_faint_lesion_the_classical_edge_cuts_short(
        seed, difficulty, appearance, n_frames, monkeypatch):
    assert appearance in random_case(seed, difficulty=difficulty, n_frames=1).description
    import iousguide.analysis.tracker as tracker_module

    contains_fraction = tracker_module.LEARNED_CONTAINS_FRACTION
    # before: bright lesions only, and the same lesion by IoU alone (a containment fraction > 1
    # never holds)
    _, before = _clicked_dice(seed, difficulty, "bright", monkeypatch, n_frames, contains_fraction=2.0)
    results, after = _clicked_dice(seed, difficulty, "bright+faint", monkeypatch, n_frames,
                                   contains_fraction=contains_fraction)
    assert any(r.tumor is not None and r.tumor.outline == "learned" for r in results)
    assert np.mean(after) >= np.mean(before) + 0.05, (before, after)
    assert sum(a < b - 0.05 for a, b in zip(after, before)) <= 1, (before, after)


def test_a_follow_on_the_model_outline_continues_on_the_model_outline(monkeypatch):
    """A calcified lesion (hard development case 10107, clicked) whose classical candidate is its
    bright focus (~30 mm^2) and whose reported outline is the model's (~75 mm^2): the next frame's
    model component is compared with the model's last outline, not with the focus. Compared with
    the focus, its area ratio (~2.6) failed the follow's area rule and the lesion was reported lost
    on 5 of the 9 frames after it was found."""
    import iousguide.analysis.tracker as tracker_module

    seed = 10107
    assert "calcified" in random_case(seed, difficulty="hard", n_frames=1).description
    _, dices = _clicked_dice(seed, "hard", tracker_module.LEARNED_OUTLINE, monkeypatch, 12,
                             contains_fraction=tracker_module.LEARNED_CONTAINS_FRACTION)
    found = next(i for i, d in enumerate(dices) if d > 0)
    assert found <= 4, dices
    # from the frame it is found on, it is reported on every frame, and in the right place
    assert all(d >= 0.6 for d in dices[found:]), dices


def test_learned_follow_compares_like_with_like():
    """``_learned_near`` measures a model component against the model's last outline when that was
    reported (``TumorState.learned_outline``), else against the accepted classical candidate."""
    from iousguide.analysis.tracker import TumorState

    yy, xx = np.mgrid[:80, :80]
    focus = ((xx - 40) ** 2 + (yy - 40) ** 2 <= 5 ** 2).astype(np.uint8)
    whole = ((xx - 40) ** 2 + (yy - 40) ** 2 <= 10 ** 2).astype(np.uint8)
    tracker = Tracker(TrackingSettings())
    focus_c, whole_c = _candidate(focus), _candidate(whole)
    tracker._tumor = TumorState(mode="tracking", mask_w=focus, area_mm2=focus_c.area_mm2, dark=False,
                                centroid_w=focus_c.centroid_w)
    assert tracker._learned_near([whole_c], px_mm=0.3, gate_mm=None) is None  # 4x the focus's area
    tracker._tumor.learned_outline = whole_c
    assert tracker._learned_near([whole_c], px_mm=0.3, gate_mm=None) is not None


def test_a_lost_lesion_that_grows_back_is_reacquired_on_the_model(monkeypatch):
    """Hard development case 10101 (hypoechoic, clicked): the plane leaves the lesion (sections of
    35 -> 11 mm^2) and comes back (18 -> 61 mm^2). The follow is lost at the smallest section; the
    model's component there is 3-9x the last (small) outline, which the area-change rule alone
    refused, so the lesion was reported lost on every later frame. A component holding most of the
    last outline is the lesion grown back (as for the classical candidates)."""
    import iousguide.analysis.tracker as tracker_module

    seed = 10101
    assert "hypoechoic" in random_case(seed, difficulty="hard", n_frames=1).description
    results, dices = _clicked_dice(seed, "hard", tracker_module.LEARNED_OUTLINE, monkeypatch, 12,
                                   contains_fraction=tracker_module.LEARNED_CONTAINS_FRACTION)
    assert all(r.status == "ok" for r in results[8:]), [r.status for r in results]
    assert all(d >= 0.7 for d in dices[8:]), dices


def test_learned_reacquisition_takes_a_grown_section_holding_the_last_outline():
    from iousguide.analysis.tracker import TumorState

    yy, xx = np.mgrid[:80, :80]
    small = ((xx - 40) ** 2 + (yy - 40) ** 2 <= 4 ** 2).astype(np.uint8)
    grown = ((xx - 42) ** 2 + (yy - 40) ** 2 <= 11 ** 2).astype(np.uint8)
    beside = ((xx - 60) ** 2 + (yy - 40) ** 2 <= 11 ** 2).astype(np.uint8)  # near, not holding it
    tracker = Tracker(TrackingSettings())
    last = _candidate(small)
    tracker._tumor = TumorState(mode="lost", mask_w=small, area_mm2=last.area_mm2, dark=True,
                                centroid_w=last.centroid_w, lost_frames=1)
    assert tracker._learned_near([_candidate(beside)], px_mm=0.3, gate_mm=20.0) is None
    assert tracker._learned_near([_candidate(grown)], px_mm=0.3, gate_mm=20.0) is not None
    # a follow (not lost) keeps the area-change rule
    tracker._tumor.mode = "tracking"
    assert tracker._learned_near([_candidate(grown)], px_mm=0.3, gate_mm=None) is None


@pytest.mark.parametrize("seed", [8008, 8033])
def test_no_first_frame_proposal_the_model_does_not_see(seed):
    """Medium development cases 8008 and 8033 (calcified, no click): a small bright speckle patch
    (8033: beside a vessel's end) was proposed on its first frame and followed as the tumour, 16-18
    mm from the lesion. A first-frame report now needs the learned model to see the same lesion;
    the calcified lesion, which the model sees, is reported instead. Every reported tumour lies on
    the lesion."""
    assert "calcified" in random_case(seed, difficulty="medium", n_frames=1).description
    frames, truth = generate_case(seed, difficulty="medium", n_frames=12)
    tracker = Tracker(TrackingSettings())
    results = [tracker.process(f) for f in frames]
    reported = [(r, f, tf) for r, f, tf in zip(results, frames, truth.frames) if r.tumor is not None]
    assert len(reported) >= 6
    for r, f, tf in reported:
        assert dice(rasterize(r.tumor.contour_px, f.shape), _truth_mask(tf, f.shape)) >= 0.4, r.frame


def _auto_dice(seed, difficulty, *, n_frames, run=None):
    """A phantom case analysed without a click, its first ``run`` frames (all by default): per frame
    the reported tumour's Dice against the true lesion (0.0 where the truth has none), or None where
    no tumour is reported."""
    frames, truth = generate_case(seed, difficulty=difficulty, n_frames=n_frames)
    tracker = Tracker(TrackingSettings())
    out = []
    for f, tf in list(zip(frames, truth.frames))[:run]:
        r = tracker.process(f)
        has_truth = tf.get("tumor") is not None or any(t.get("primary") for t in tf.get("tumors") or [])
        out.append(None if r.tumor is None else dice(rasterize(r.tumor.contour_px, f.shape), _truth_mask(tf, f.shape))
                   if has_truth else 0.0)
    return out


@pytest.mark.parametrize("seed", [8034, 8037])
def test_a_stronger_lesion_the_model_sees_beats_a_faint_patch_it_does_not(seed):
    """Medium development cases 8034 and 8037 (a faint hyperechoic lesion, no click): a faint bright
    speckle patch the model does not see was proposed (8037: confirmed by hysteresis at 1.9 dB,
    followed 50 mm from the lesion, which the model saw on every frame at peak probability 1.0).
    Where both detectors propose, the model's focal lesion with the higher score now wins, and a
    proposal the classical map agreed with on the frame before is confirmed on the model's map.
    Every reported tumour lies on the lesion, from the third frame on."""
    assert "hyperechoic" in random_case(seed, difficulty="medium", n_frames=1).description
    per_frame = _auto_dice(seed, "medium", n_frames=12)
    for k, d in enumerate(per_frame):
        assert d is None or d >= 0.6, k
    assert all(d is not None for d in per_frame[2:])


def test_the_model_does_not_win_against_look_alikes(monkeypatch):
    """The competition is held only where the model's lesion is focal: on the real healthy-liver
    sweep (frames 116-119) it saw a bright structure (15 mm, peak 1.0) among classical bright
    candidates of more than half its score - the liver's own pattern - and without that rule a
    tumour was reported on 32 of 140 frames instead of 15. Here: the same proposal with a classical
    look-alike of comparable score is not made; without it, it is."""
    import iousguide.analysis.tracker as tracker_module
    from iousguide.analysis.imaging import prepare as prepare_frame

    frames, _ = generate_case(8037, difficulty="medium", n_frames=3)
    prep = prepare_frame(frames[0].gray, spacing_mm=frames[0].spacing_mm, settings=TrackingSettings())
    h, w = prep.work_shape
    lesion = np.zeros((h, w), bool)
    lesion[20:50, 100:130] = True
    look_alike = np.zeros((h, w), bool)
    look_alike[120:145, 30:55] = True
    faint = np.zeros((h, w), bool)
    faint[150:160, 200:210] = True
    model = _candidate(lesion, contrast_db=5.0)
    model.learned = True
    classical_piece = _candidate(lesion & (np.arange(w)[None, :] < 120), contrast_db=3.0)
    faint_patch = _candidate(faint, contrast_db=2.5)
    rival = _candidate(look_alike, contrast_db=5.0)
    monkeypatch.setattr(tracker_module, "plausible_auto", lambda c, **k: c is faint_patch or c is rival)

    def proposal(candidates):
        tracker = Tracker(TrackingSettings())
        tracker._follow_tumor(prep, candidates, None, np.zeros(frames[0].gray.shape, bool), [], [],
                                         lumens_w=np.zeros((h, w), bool), learned=[model])
        return tracker._tumor.pending

    assert proposal([classical_piece, faint_patch]) is model
    assert proposal([classical_piece, faint_patch, rival]) is not model


def test_a_classical_piece_of_the_models_lesion_agrees_with_it():
    """Hard development case 10115 (a faint hypoechoic lesion, convex, no click): the classical map
    saw a 4-5 mm piece of the 9-10 mm lesion the model outlined whole (IoU ~0.25 < 0.3), so the two
    detectors did not "agree" and nothing was proposed until frame 10. A classical candidate the
    model's component holds (as ``_learned_same_lesion`` counts it) now agrees with it."""
    assert "hypoechoic" in random_case(10115, difficulty="hard", n_frames=1).description
    on_lesion = [d >= 0.8 for d in _auto_dice(10115, "hard", n_frames=12, run=5) if d is not None]
    assert len(on_lesion) >= 3 and all(on_lesion)


def test_agreement_rules():
    import iousguide.analysis.tracker as tracker_module

    whole = np.zeros((60, 60), bool)
    whole[10:40, 10:40] = True
    piece = np.zeros((60, 60), bool)
    piece[18:32, 18:32] = True  # inside, IoU 0.22
    beside = np.zeros((60, 60), bool)
    beside[30:50, 30:50] = True  # overlaps a corner only
    model = _candidate(whole)
    assert tracker_module._agrees(model, _candidate(piece))
    assert not tracker_module._agrees(model, _candidate(beside))
    assert tracker_module._agrees(model, _candidate(whole))


def test_a_calcified_lesion_pending_on_its_focus_is_confirmed_on_the_models_outline():
    """Hard development case 10106 (calcified, no click): the classical map saw the bright focus
    (4-5 mm) on some frames only, the model the whole lesion (10-12 mm, as the truth) on every
    frame. The pending proposal went from the model's outline to the focus and back, and each
    change restarted its count (IoU < 0.3), so nothing was proposed for 9 frames. A candidate
    holding the pending one, or held by it, now continues it."""
    assert "calcified" in random_case(10106, difficulty="hard", n_frames=1).description
    on_lesion = [d >= 0.7 for d in _auto_dice(10106, "hard", n_frames=12, run=6) if d is not None]
    assert len(on_lesion) >= 4 and all(on_lesion)


def test_pending_continuity_rules():
    import iousguide.analysis.tracker as tracker_module

    whole = np.zeros((60, 60), bool)
    whole[10:40, 10:40] = True
    focus = np.zeros((60, 60), bool)
    focus[12:20, 15:30] = True  # inside, IoU 0.13
    beside = np.zeros((60, 60), bool)
    beside[35:55, 35:55] = True
    assert tracker_module._same_lesion(_candidate(whole), _candidate(focus))
    assert tracker_module._same_lesion(_candidate(focus), _candidate(whole))
    assert not tracker_module._same_lesion(_candidate(whole), _candidate(beside))


def test_no_proposal_inside_a_lumen_and_no_reacquisition_of_a_band():
    """Hard case 10710 (an isoechoic lesion with a halo, no click; a fresh seed that showed the
    failure): the grey interior of a deep lumen the vessel detector had outlined whole was proposed
    as a dark lesion and followed 26 mm from the lesion for 18 frames - a tumour drawn inside a
    vessel. Then (that rule alone) a faint bright patch was proposed and, lost, re-acquired as a band
    cut by the fan's edge. A dark candidate lying within a detected lumen it would not take in is no
    longer proposed, and a lost automatic follow is re-acquired only on a candidate shaped as a
    proposal; the lesion is found from frame 7 on."""
    assert "isoechoic_halo" in random_case(10710, difficulty="hard", n_frames=1).description
    reported = [(k, d) for k, d in enumerate(_auto_dice(10710, "hard", n_frames=30)) if k >= 7 and d is not None]
    assert len(reported) >= 20
    for k, d in reported:
        assert d >= 0.6, k


def test_inside_lumen_rule():
    import iousguide.analysis.tracker as tracker_module
    from iousguide.analysis.vessels import VesselDetection

    def lumen(mask):
        return VesselDetection(contour_px=np.zeros((4, 2)), centroid_px=(0.0, 0.0), diameter_mm=5.0, diameter_px=10.0,
                               kind="unknown", long_axis=False, edge_sigma_mm=0.1, mask_w=mask,
                               sheath_ratio=float("nan"), refined=None)

    big = np.zeros((60, 60), bool)
    big[10:50, 10:50] = True
    core = np.zeros((60, 60), bool)
    core[20:40, 20:40] = True
    arc = np.zeros((60, 60), bool)
    arc[22:26, 22:38] = True  # a thin dark arc (a halo piece) the candidate's hull takes in
    beside = np.zeros((60, 60), bool)
    beside[30:55, 45:60] = True
    assert tracker_module._inside_lumen(_candidate(core, dark=True), [lumen(big)])
    assert not tracker_module._inside_lumen(_candidate(core, dark=True), [lumen(arc)])
    assert not tracker_module._inside_lumen(_candidate(core, dark=True), [lumen(beside)])


def test_a_shadow_stripe_of_a_calcified_lesion_is_not_proposed():
    """Fresh phantom case 10768 (medium, convex, a faint calcified lesion; used once this showed it):
    a 1.5 x 35 mm shadow stripe below the lesion, running along the fan's slanted beam, was proposed
    as a dark lesion and followed (per-frame Dice 0.00-0.14 on 5 of the first 14 frames, lost on the
    others). A dark band is not proposed now (tumor.AUTO_DARK_MAX_ELONGATION); the lesion itself is
    found on the model's outline."""
    per_frame = _auto_dice(10768, "medium", n_frames=30, run=10)
    reported = [d for d in per_frame if d is not None]
    assert len(reported) >= 7
    assert all(d >= 0.6 for d in reported), per_frame


@pytest.mark.parametrize("alone", [True, False])
def test_a_focal_visible_lesion_only_the_model_sees_is_proposed(monkeypatch, alone):
    """Development case 8875 (medium, a hyperechoic lesion the classical maps miss on every frame;
    the model sees it at 3.7-4.5 dB against the tissue around it, with no classical look-alike): the
    model proposes it on its own and it is followed on the model's outline. Without that rule
    (tracker.LEARNED_ALONE_FOCAL) no tumour is reported on any frame."""
    import iousguide.analysis.tracker as tracker_module

    monkeypatch.setattr(tracker_module, "LEARNED_ALONE_FOCAL", alone)
    per_frame = _auto_dice(8875, "medium", n_frames=12)
    if alone:
        assert all(d is not None and d >= 0.85 for d in per_frame[2:]), per_frame
    else:
        assert all(d is None for d in per_frame), per_frame
