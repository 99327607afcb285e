"""Guidance from measurements: modulated margin, heat-sink risk, bioheat estimate, remnant budget (no Qt).

Public API::

    from iousguide.guidance.settings import GuidanceSettings    # every threshold, with its CLINICAL.md basis
    from iousguide.guidance.apply import apply_guidance         # FrameResult -> new FrameResult with guidance
    from iousguide.guidance.margin import plan_margin           # the modulated resection line (mm, exact geometry)
    from iousguide.guidance.heatsink import classify_heat_sink  # none / moderate / high with its basis
    from iousguide.guidance.bioheat import estimate_ablation    # 2-D Pennes: predicted zone, deficit per vessel
    from iousguide.guidance.flr import remnant_budget           # future liver remnant vs floor, salvage question

``python -m iousguide.guidance.settings`` prints every setting with its value and basis.
"""
