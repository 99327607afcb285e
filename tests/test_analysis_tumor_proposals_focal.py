"""Automatic tumour proposals in a liver that has no lesion: a metastasis is focal - one region
that differs from the parenchyma, not one of several look-alikes of similar weight (the vessel
walls, sheaths and fissures of a real liver). Scenes from iousguide.analysis.synthetic (discs of
known echogenicity in fully developed speckle); each test checks both ways - what the rule stops
and a lesion that is still proposed (or seeded by a click) - so no test passes by proposing nothing.
"""

from __future__ import annotations

from iousguide.analysis.settings import TrackingSettings
from iousguide.analysis.synthetic import Disc, Scene, render
from iousguide.analysis.tracker import Tracker
from iousguide.frames import Frame

SPACING_MM = 0.1
SHAPE_PX = (500, 800)


def frames_of(scenes: list[Scene], seed0: int) -> list[Frame]:
    """One frame per scene (the same tracker sees them in order), speckle seeds seed0, seed0 + 1, ..."""
    return [Frame(pixels=render(sc, seed=seed0 + i), index=i, t_mono_ns=i, t_source_s=i / 15,
                  spacing_mm=(sc.spacing_mm, sc.spacing_mm)) for i, sc in enumerate(scenes)]


def states(scenes: list[Scene], seed0: int, **settings) -> list:
    tracker = Tracker(TrackingSettings(**settings))
    return [None if r.tumor is None else r.tumor.state for r in (tracker.process(f) for f in frames_of(scenes, seed0))]


def scene(*discs: Disc) -> Scene:
    return Scene(shape_px=SHAPE_PX, spacing_mm=SPACING_MM, discs=list(discs))


def test_alike_lesions_are_not_proposed_and_one_clearly_stronger_is():
    """Several look-alikes of similar weight are the parenchyma's own pattern, not one focal lesion:
    with two alike dark discs in view nothing is proposed (before, the first was reported after the
    confirm frames). One of them clearly weaker (smaller and fainter), the other is proposed; a click
    takes either of the alike ones."""
    left = Disc((22.0, 25.0), 5.0, echo=0.55)
    right = Disc((58.0, 25.0), 5.0, echo=0.55)
    faint_small = Disc((58.0, 25.0), 2.6, echo=0.75)
    assert states([scene(left, right)] * 4, 920) == [None] * 4
    assert states([scene(left, faint_small)] * 4, 920)[-1] is not None
    assert states([scene(left, right)], 930, tumor_seed_px=(580.0, 250.0)) == ["seeded"]


def test_a_lesion_is_proposed_once_an_alike_structure_cut_by_the_edge_has_left_the_view():
    """An alike lesion cut by the image's edge is not proposed, but while it is in view the image
    does not show one clear lesion: no proposal. As soon as it has left the view, the lesion (seen
    on every frame) is reported."""
    lesion = Disc((40.0, 25.0), 5.0, echo=0.4)
    cut = Disc((3.0, 25.0), 5.0, echo=0.4)
    got = states([scene(lesion, cut)] * 3 + [scene(lesion)] * 2, 940)
    assert got[:3] == [None] * 3 and got[3] is not None, got
