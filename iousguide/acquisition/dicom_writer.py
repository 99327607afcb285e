"""Write an ultrasound multi-frame cine (US Multi-frame Image Storage) with a Sequence of Ultrasound Regions.

pydicom builds the dataset; pixels are MONOCHROME2 8-bit, stored either
uncompressed (Explicit VR Little Endian) or RLE Lossless (pydicom's own
encoder, no plugin needed). Frame timing is ``FrameTime`` (ms) plus a
``FrameTimeVector``; the tissue region carries ``PhysicalDeltaX/Y`` in cm/px so
readers calibrate from the file (precedence: preset > file metadata).

Example
-------
>>> write_us_cine("clip.dcm", frames, spacing_mm=(0.14, 0.14), fps=10.0)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from iousguide.errors import SettingsError

US_MULTIFRAME_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.3.1"
_UID_ROOT = "1.2.826.0.1.3680043.10.1107."  # iousguide phantom UIDs (deterministic from the seed)


def _uid(seed: int, kind: int) -> str:
    return f"{_UID_ROOT}{int(seed) % 10**12}.{kind}"


def write_us_cine(
    path: str | Path,
    frames: Sequence[np.ndarray] | Iterable[np.ndarray],
    *,
    spacing_mm: tuple[float, float] | None,
    fps: float,
    region_px: tuple[int, int, int, int] | None = None,
    compression: str = "rle",
    seed: int = 0,
    series_description: str = "iousguide phantom cine",
    study_date: str = "20261127",
    manufacturer: str = "iousguide phantom",
    transducer: str = "phantom 7.5 MHz",
) -> Path:
    """Write grey frames as a DICOM US multi-frame cine.

    Parameters
    ----------
    path : str or Path
        Output ``.dcm``.
    frames : sequence of ndarray (rows, cols) uint8
        All frames the same size.
    spacing_mm : (x, y) or None
        mm per pixel of the tissue region; None writes no Ultrasound Regions (uncalibrated).
    fps : float
        Frame rate (frames/s) -> ``FrameTime`` = 1000 / fps ms.
    region_px : (x, y, width, height), optional
        The tissue region inside the frame (default: the whole frame).
    compression : {"rle", "none"}
        RLE Lossless or Explicit VR Little Endian.
    seed : int
        Makes the UIDs deterministic (regenerating gives identical bytes).

    Returns
    -------
    Path
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless

    stack = np.stack([np.asarray(f) for f in frames])
    if stack.ndim != 3 or stack.dtype != np.uint8:
        raise SettingsError(f"DICOM cine needs grey uint8 frames (N, rows, cols), got {stack.dtype} {stack.shape}")
    if fps <= 0:
        raise SettingsError(f"fps must be positive, got {fps}")
    if compression not in ("rle", "none"):
        raise SettingsError(f"compression must be 'rle' or 'none', got {compression!r}")
    n, rows, cols = stack.shape
    path = Path(path)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = US_MULTIFRAME_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = _uid(seed, 3)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = _UID_ROOT + "0"
    meta.ImplementationVersionName = "IOUSGUIDE_1"

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = US_MULTIFRAME_SOP_CLASS
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = _uid(seed, 1)
    ds.SeriesInstanceUID = _uid(seed, 2)
    ds.Modality = "US"
    ds.PatientName = "Phantom^Liver"
    ds.PatientID = f"PHANTOM{seed}"
    ds.StudyDate = study_date
    ds.SeriesDate = study_date
    ds.ContentDate = study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "090000"
    ds.Manufacturer = manufacturer
    ds.SeriesDescription = series_description
    ds.TransducerData = transducer
    ds.BodyPartExamined = "LIVER"
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = n
    frame_time_ms = 1000.0 / fps
    ds.FrameTime = f"{frame_time_ms:.4f}"[:16]
    ds.FrameIncrementPointer = pydicom.tag.Tag("FrameTime")
    ds.CineRate = int(round(fps))
    ds.RecommendedDisplayFrameRate = int(round(fps))
    ds.FrameTimeVector = [0.0] + [round(frame_time_ms, 4)] * (n - 1)

    if spacing_mm is not None:
        x, y, w, h = region_px if region_px is not None else (0, 0, cols, rows)
        if x < 0 or y < 0 or x + w > cols or y + h > rows:
            raise SettingsError(f"region {region_px} lies outside the {cols}x{rows} frame")
        region = Dataset()
        region.RegionSpatialFormat = 1  # 2-D tissue
        region.RegionDataType = 1  # tissue
        region.RegionFlags = 0
        region.RegionLocationMinX0 = int(x)
        region.RegionLocationMinY0 = int(y)
        region.RegionLocationMaxX1 = int(x + w - 1)
        region.RegionLocationMaxY1 = int(y + h - 1)
        region.PhysicalUnitsXDirection = 3  # cm
        region.PhysicalUnitsYDirection = 3
        region.PhysicalDeltaX = float(spacing_mm[0]) / 10.0
        region.PhysicalDeltaY = float(spacing_mm[1]) / 10.0
        region.ReferencePixelX0 = int(x + w // 2)
        region.ReferencePixelY0 = int(y)
        ds.SequenceOfUltrasoundRegions = DicomSequence([region])

    ds.PixelData = stack.tobytes()
    if compression == "rle":
        ds.compress(RLELossless, generate_instance_uid=False)  # keep the deterministic UID
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
