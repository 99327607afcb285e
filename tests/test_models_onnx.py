"""The shipped ONNX models are valid graphs with a fixed nominal input size, which OpenCV reshapes
to any padded frame size.

With a symbolic height and width OpenCV 4.x's ONNX importer failed on them ("findCommonShape" at
the decoder's Add, opencv-python-headless 4.10 and 4.14); a fixed size is read by 4.x and 5.x
alike (checked by hand: outputs within 3e-6 of 5.0's). pyproject asks for OpenCV >= 5.0 all the
same: every figure was measured with it, and 4.10 detects other lumens on some frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from iousguide.analysis.learned import _load
from iousguide.errors import AnalysisError

onnx = pytest.importorskip("onnx")

MODELS = sorted((Path(__file__).resolve().parents[1] / "iousguide" / "models").glob("*.onnx"))


def test_both_models_are_shipped():
    assert {p.stem for p in MODELS} == {"vessel_lumen", "lesion"}


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_graph_is_valid_with_a_fixed_input_size(path):
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["x"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert all(d.HasField("dim_value") and d.dim_value > 0 for d in dims), [str(d).strip() for d in dims]


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
@pytest.mark.parametrize("shape", [(64, 64), (96, 128), (400, 304)])
def test_opencv_runs_it_on_any_padded_size(path, shape):
    net, meta = _load(str(path))
    x = np.random.default_rng(sum(shape)).random((1, 1) + shape, dtype=np.float32)
    net.setInput(x)
    out = net.forward()
    stride = int(meta["output_stride"])
    assert out.shape == (1, 1, shape[0] // stride, shape[1] // stride)
    assert np.isfinite(out).all() and 0.0 <= out.min() and out.max() <= 1.0


def test_a_model_opencv_cannot_read_is_one_clear_line(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(MODELS[0].read_bytes()[:5000])  # truncated
    with pytest.raises(AnalysisError) as info:
        _load(str(bad))
    message = str(info.value)
    assert "\n" not in message and str(bad) in message and cv2.__version__ in message, message
