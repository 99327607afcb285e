"""refine_region's shortcuts for a region its caller gives up (max_hole_fraction) and for a second
call on the same region (memo) must not change any result."""

from __future__ import annotations

import numpy as np

from iousguide.analysis import vessels as vessels_mod
from iousguide.analysis.imaging import prepare
from iousguide.analysis.refine import refine_region
from iousguide.analysis.settings import TrackingSettings
from iousguide.analysis.synthetic import Disc, Scene, render


def _preps(settings):
    """Frames whose lumen cores include one whose first cut is a ring (a hypoechoic lesion with an
    isoechoic centre, found as a dark core: phantom seed 4242 (the benchmark clip), frame 1 of 8) and
    a synthetic frame of plain lumens."""
    from iousguide.phantom import generate_case

    frames, _ = generate_case(4242, difficulty="medium", n_frames=8, probe="convex", width_px=800, height_px=600,
                              spacing_mm=0.12)
    out = [prepare(np.ascontiguousarray(f.gray), spacing_mm=f.spacing_mm, settings=settings) for f in frames[:2]]
    scene = Scene(shape_px=(420, 560), spacing_mm=0.12, discs=[
        Disc((22.0, 22.0), 3.0, echo=0.0), Disc((33.5, 22.0), 3.0, echo=0.0), Disc((50.0, 12.0), 2.5, echo=0.0)])
    out.append(prepare(render(scene, seed=1), spacing_mm=(0.12, 0.12), settings=settings))
    return out


def _cores(prep, settings):
    labels, cands = vessels_mod.lumen_candidates(prep, settings=settings)
    return [(labels == label, bbox) for label, bbox, _area in cands]


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return (np.array_equal(a.contour_px, b.contour_px) and np.array_equal(a.mask, b.mask)
            and a.origin_px == b.origin_px and a.hole_fraction == b.hole_fraction
            and a.inside_level == b.inside_level and a.outside_level == b.outside_level
            and a.edge_sigma_mm == b.edge_sigma_mm)


def test_hole_early_exit_and_memo_keep_every_result():
    s = TrackingSettings()
    holed = whole = 0
    for prep in _preps(s):
        for core, bbox in _cores(prep, s):
            kw = dict(dark=True, smoothing_mm=s.edge_smoothing_mm, upsample=1, level_fraction=s.edge_level_fraction,
                      margin_mm=2.5, outside_cap=float(np.mean(prep.tissue_power_row[bbox[1]:bbox[1] + bbox[3]])),
                      sectors=12, passes=2)
            full = refine_region(prep, core, bbox, **kw)
            memo: dict = {}
            short = refine_region(prep, core, bbox, **kw, max_hole_fraction=0.25, memo=memo)
            if full is None:
                assert short is None
                continue
            if full.hole_fraction > 0.25:  # given up by the caller: only its hole fraction is kept
                holed += 1
                assert short.hole_fraction == full.hole_fraction and len(short.contour_px) == 0
            else:
                whole += 1
                assert _same(short, full)
            # the second cut with the first one's window equals a fresh one
            again = refine_region(prep, core, bbox, **kw, band_limit_mm=1.5, memo=memo)
            fresh = refine_region(prep, core, bbox, **kw, band_limit_mm=1.5)
            assert _same(again, fresh)
    assert holed >= 1 and whole >= 1  # both paths were exercised


def test_lumens_equal_with_and_without_the_shortcuts(monkeypatch):
    s = TrackingSettings()
    found = 0
    for prep in _preps(s):
        out = {}
        for on in (False, True):
            monkeypatch.setattr(vessels_mod, "HOLE_EARLY_EXIT", on)
            out[on] = vessels_mod.detect_vessels_prepared(prep, settings=s)
        assert len(out[True]) == len(out[False])
        for a, b in zip(out[False], out[True]):
            assert np.array_equal(a.contour_px, b.contour_px) and a.diameter_mm == b.diameter_mm
            assert a.kind == b.kind and np.array_equal(a.mask_w, b.mask_w)
        found += len(out[True])
    assert found >= 3
