"""Video files and image folders: real files, timing, seeking, bad input."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import shared_file
from iousguide.acquisition import open_source
from iousguide.cli import main
from iousguide.errors import CorruptDataError, EndOfSource, UnsupportedFormatError


def write_video(path, n_frames=12, size=(160, 120), fps=15.0, fourcc="mp4v"):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened()
    for i in range(n_frames):
        img = np.full((size[1], size[0], 3), 20, np.uint8)
        cv2.putText(img, str(i), (20, 80), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 4)
        writer.write(img)
    writer.release()
    return path


def test_liver_sweep_variable_rate_times_match_sidecar():
    video = shared_file("liver_sweep/liver_sweep_imfusion_h264.mp4")
    sidecar = json.loads(shared_file("liver_sweep/liver_sweep_imfusion.json").read_text())
    truth = np.asarray(sidecar["timestamps_unix_s"]) - sidecar["timestamps_unix_s"][0]
    with open_source(video) as source:
        assert len(source) == sidecar["n_frames"] == 140
        times = np.array([frame.t_source_s for frame in source])
        info = source.info()
    # container PTS are in 1/16000 s ticks rounded to ms by the exporter
    assert np.max(np.abs(times - truth)) < 0.002
    assert info.variable_rate
    assert (info.width, info.height) == (sidecar["width"], sidecar["height"])
    assert info.spacing_mm is None and info.spacing_source == "none"


def test_liver_sweep_seek_gives_the_same_pixels_as_sequential_reading():
    video = shared_file("liver_sweep/liver_sweep_imfusion_h264.mp4")
    with open_source(video) as source:
        frames = [f.pixels.copy() for f in source]
        for index in (97, 3, 139, 0, 50):
            source.seek(index)
            assert np.array_equal(source.read().pixels, frames[index])
        source.seek_time(1.0)
        expected = int(np.searchsorted(source.relative_times_s(), 1.0 + 1e-9, side="right") - 1)
        assert source.read().index == expected


def test_info_json_on_liver_sweep_with_spacing(capsys):
    video = shared_file("liver_sweep/liver_sweep_imfusion_h264.mp4")
    assert main(["info", str(video), "--json", "--spacing-mm", "0.3148"]) == 0
    data = json.loads(capsys.readouterr().out)
    for key in ("format", "frames", "width", "height", "channels", "fps", "duration_s", "variable_rate",
                "spacing_mm", "spacing_source", "crop_px", "warnings"):
        assert key in data
    assert data["frames"] == 140 and data["spacing_mm"] == [0.3148, 0.3148] and data["spacing_source"] == "cli"


def test_written_video_roundtrip_and_end(tmp_path):
    path = write_video(tmp_path / "clip.mp4")
    with open_source(path) as source:
        assert len(source) == 12
        assert source.nominal_fps == pytest.approx(15.0, rel=1e-3)
        assert not source.info().variable_rate
        frames = list(source)
        assert [f.index for f in frames] == list(range(12))
        assert frames[0].pixels.ndim == 2  # grey content comes out grey
        with pytest.raises(EndOfSource):
            source.read()


def test_truncated_and_garbage_video_fail_cleanly(tmp_path):
    good = write_video(tmp_path / "clip.mp4", n_frames=30)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(b"\x00\x01not a video" * 100)
    for path in (truncated, garbage):
        with pytest.raises((CorruptDataError, UnsupportedFormatError)):
            with open_source(path) as source:
                list(source)


@pytest.mark.parametrize("content", [b"", b"\x00" * 10, b"RIFF\x00\x00"])
def test_cli_bad_video_one_line_exit_2(tmp_path, content):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    proc = subprocess.run([sys.executable, "-m", "iousguide", "info", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("iousguide: error:")
    assert "Traceback" not in proc.stderr


def test_image_folder_natural_sort_and_rate(tmp_path):
    for i in (10, 2, 1):
        img = np.full((30, 40), i * 10, np.uint8)
        cv2.imwrite(str(tmp_path / f"frame{i}.png"), img)
    (tmp_path / "notes.txt").write_text("ignored")
    with open_source(tmp_path, fps=5.0) as source:
        values = [int(f.pixels[0, 0]) for f in source]
        assert values == [10, 20, 100]
        assert source.duration_s == pytest.approx(0.6)
        assert source.frame_at(2).t_source_s == pytest.approx(0.4)


def test_image_16bit_and_rgba(tmp_path):
    img16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    cv2.imwrite(str(tmp_path / "a.tif"), img16)
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 2] = 200  # red in BGRA
    cv2.imwrite(str(tmp_path / "b.png"), rgba)
    with open_source(tmp_path / "a.tif") as source:
        frame = source.read()
        assert frame.pixels.dtype == np.uint8 and frame.pixels.max() == 255
        assert any("8-bit" in w for w in source.warnings)
    with open_source(tmp_path / "b.png") as source:
        frame = source.read()
        assert frame.pixels.shape == (8, 8, 3) and frame.pixels[0, 0, 0] == 200


def test_corrupt_image_and_empty_folder(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(CorruptDataError):
        open_source(tmp_path / "x.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UnsupportedFormatError):
        open_source(empty)


def test_real_vessel_images_folder():
    folder = shared_file("vessels_usgra/images")
    with open_source(folder, fps=20) as source:
        assert len(source) == 204
        assert source.read().shape == (512, 512)
