"""Fuzzing the PLUS/NRRD header parsers: only IousguideError may escape, never a hang.

Generated files start from a valid header with up to three fields mutated, so
both the error paths and the reading paths are exercised. Campaigns of 3000
examples per test (``IOUSGUIDE_FUZZ_EXAMPLES=3000``) found no escaping exception
in the final code; the hand-picked hostile headers at the end pin the paths
that matter most (pynrrd's own exceptions, inconsistent dimensions).
"""

from __future__ import annotations

import gzip
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iousguide.acquisition import open_source
from iousguide.acquisition.plus import open_sequence, parse_metaio_header
from iousguide.errors import IousguideError

# IOUSGUIDE_FUZZ_EXAMPLES=5000 for a long campaign; the default keeps the suite fast
FUZZ = settings(max_examples=int(os.environ.get("IOUSGUIDE_FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

_numbers = st.one_of(
    st.integers(-3, 70).map(str),
    st.sampled_from(["0", "-1", "1e9", "nan", "inf", "2.5", "99999999999", "", "x", "1 2", "3 4 5", "0 0 0"]),
)
_dimsize = st.one_of(
    st.lists(st.integers(-1, 9), min_size=0, max_size=5).map(lambda v: " ".join(map(str, v))),
    st.sampled_from(["99999 99999 99999", "4 3 2", "4 3", "4 3 1 2", "a b c", "4.5 3 2"]),
)
_METAIO_MUTATIONS = {
    "NDims": _numbers,
    "DimSize": _dimsize,
    "ElementType": st.sampled_from(["MET_UCHAR", "MET_USHORT", "MET_SHORT", "MET_FLOAT", "MET_DOUBLE",
                                    "MET_CHAR", "MET_STRING", "met_uchar", ""]),
    "ElementNumberOfChannels": st.sampled_from(["1", "3", "4", "2", "0", "-1", "x", ""]),
    "CompressedData": st.sampled_from(["True", "False", "true", "maybe", ""]),
    "CompressedDataSize": _numbers,
    "BinaryData": st.sampled_from(["True", "False", "x"]),
    "BinaryDataByteOrderMSB": st.sampled_from(["True", "False", "x"]),
    "UltrasoundImageOrientation": st.sampled_from(["MF", "UN", "FM", "NU", "XX", "M", "", "MFA", "UNA"]),
    "Kinds": st.sampled_from(["domain domain list", "domain domain domain", "list", ""]),
    "ElementSpacing": st.sampled_from(["1 1 1", "0.3 0.3 1", "a", ""]),
    "HeaderSize": _numbers,
    "ObjectType": st.sampled_from(["Image", "Mesh", ""]),
    "ElementDataFile": st.sampled_from(["LOCAL", "missing.raw", "LIST", "", "f%03d.raw"]),
}


@st.composite
def _metaio_fields(draw):
    """A valid 4x3x2 uchar header with up to three fields mutated or removed."""
    fields = {"ObjectType": "Image", "NDims": "3", "DimSize": "4 3 2", "ElementType": "MET_UCHAR",
              "ElementNumberOfChannels": "1", "CompressedData": "False", "UltrasoundImageOrientation": "MF"}
    for key in draw(st.lists(st.sampled_from(sorted(_METAIO_MUTATIONS)), max_size=3, unique=True)):
        if draw(st.integers(0, 4)) == 0:
            fields.pop(key, None)
        else:
            fields[key] = draw(_METAIO_MUTATIONS[key])
    return fields


_frame_fields = st.lists(
    st.tuples(
        st.integers(0, 12),
        st.sampled_from(["Timestamp", "ImageStatus", "FrameNumber", "ImageToTransducerTransform",
                         "ImageToTransducerTransformStatus", "UnfilteredTimestamp", "ProbeToTrackerTransform"]),
        st.one_of(_numbers, st.sampled_from(["OK", "INVALID", "0.2 0 0 -3 0 0.2 0 -1 0 0 1 0 0 0 0 1",
                                             "1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1", "0 0 0"])),
    ),
    max_size=12,
)


# mostly the right size for a 4x3x2 (x channels) image, sometimes anything
_payload = st.one_of(st.integers(0, 4).flatmap(lambda k: st.binary(min_size=24 * k, max_size=24 * k)),
                     st.binary(max_size=300))


def _consume(path: Path) -> None:
    try:
        with open_source(path) as source:
            source.info()
            for i, frame in enumerate(source):
                assert frame.pixels.dtype == np.uint8
                if frame.spacing_mm is not None:
                    assert all(0 < v < 10 for v in frame.spacing_mm)
                if i > 20:
                    break
            if len(source):
                source.frame_at(len(source) - 1)
                source.frame_at(0)
    except IousguideError as exc:
        assert "\n" not in str(exc), str(exc)


@FUZZ
@given(text=st.one_of(st.binary(max_size=400), st.text(max_size=400)))
def test_metaio_header_parser_raises_only_typed_errors(text):
    try:
        parse_metaio_header(text)
    except IousguideError:
        pass


@FUZZ
@given(fields=_metaio_fields(), frames=_frame_fields, payload=_payload,
       compress=st.booleans(), suffix=st.sampled_from([".mha", ".igs.mha", ".mhd"]))
def test_metaio_files_raise_only_typed_errors(fields, frames, payload, compress, suffix):
    if compress:
        fields.setdefault("CompressedData", "True")
    data_file = fields.pop("ElementDataFile", "LOCAL")
    lines = ["ObjectType = " + fields.pop("ObjectType", "Image")]
    lines += [f"{k} = {v}" for k, v in fields.items()]
    lines += [f"Seq_Frame{i:04d}_{name} = {value}" for i, name, value in frames]
    lines.append(f"ElementDataFile = {data_file}")
    data = zlib.compress(payload) if compress else payload
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"f{suffix}"
        path.write_bytes(("\n".join(lines) + "\n").encode("latin-1") + data)
        _consume(path)


_NRRD_MUTATIONS = {
    "type": st.sampled_from(["uint8", "uchar", "short", "float", "double", "int64", "block", "x"]),
    "dimension": st.sampled_from(["2", "3", "4", "5", "0", "x"]),
    "sizes": _dimsize,
    "encoding": st.sampled_from(["raw", "gzip", "gz", "bzip2", "ascii", "x"]),
    "endian": st.sampled_from(["little", "big", "middle"]),
    "kinds": st.sampled_from(["domain domain list", "list domain domain domain", "RGB-color domain domain list",
                              "domain domain domain", "vector list domain domain", "list domain domain", "x y z", ""]),
    "space directions": st.sampled_from(["(1,0) (0,1) none", "none (1,0,0) (0,1,0) (0,0,1)", "(a,b)", ""]),
    "byte skip": _numbers,
    "data file": st.sampled_from(["missing.raw", "LIST", ""]),
}


@st.composite
def _nrrd_fields(draw):
    fields = {"type": "uint8", "dimension": "3", "sizes": "4 3 2", "kinds": "domain domain list",
              "encoding": "raw", "endian": "little"}
    for key in draw(st.lists(st.sampled_from(sorted(_NRRD_MUTATIONS)), max_size=3, unique=True)):
        if draw(st.integers(0, 4)) == 0:
            fields.pop(key, None)
        else:
            fields[key] = draw(_NRRD_MUTATIONS[key])
    return fields


@FUZZ
@given(fields=_nrrd_fields(), frames=_frame_fields, payload=_payload,
       compress=st.booleans(), index_values=st.sampled_from([None, "0 1", "0 1 2", "a b", "0.5"]))
def test_nrrd_files_raise_only_typed_errors(fields, frames, payload, compress, index_values):
    if compress and fields.get("encoding") == "raw":
        fields["encoding"] = "gzip"
    lines = ["NRRD0004"] + [f"{k}: {v}" for k, v in fields.items()]
    if index_values is not None:
        lines.append(f"axis 2 index values:={index_values}")
    lines += [f"Seq_Frame{i:04d}_{'Status' if name == 'ImageStatus' else name}:={value}" for i, name, value in frames]
    data = gzip.compress(payload) if compress else payload
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "f.seq.nrrd"
        path.write_bytes(("\n".join(lines) + "\n\n").encode("latin-1") + data)
        _consume(path)


@FUZZ
@given(log=st.text(alphabet=st.sampled_from(list("Seq_Frame0123_Committed =1\nTimestamp.")), max_size=300),
       raw_bytes=st.integers(0, 200))
def test_journal_log_raises_only_typed_errors(log, raw_bytes):
    with tempfile.TemporaryDirectory() as folder:
        partial = Path(folder) / "r.igs.mha.partial"
        partial.mkdir()
        (partial / "journal.mhd").write_text(
            "ObjectType = Image\nNDims = 3\nDimSize = 5 4 0\nElementType = MET_UCHAR\n"
            "IousguideFrameLog = frames.log\nElementDataFile = frames.raw\n"
        )
        (partial / "frames.log").write_text(log)
        (partial / "frames.raw").write_bytes(bytes(raw_bytes))
        try:
            with open_sequence(partial) as source:
                for frame in source:
                    assert frame.pixels.shape == (4, 5)
        except IousguideError:
            pass


# ---------------------------------------------------------------------------
# hand-picked hostile headers (regression tests)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "header",
    [
        # pynrrd's own parse errors (ValueError/IndexError inside pynrrd) must become CorruptDataError
        b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 4 3 2\nspace directions: (a,b)\nencoding: raw\n\n",
        b"NRRD0004\ntype: uint8\ndimension: x\nsizes: 4 3 2\nencoding: raw\n\n",
        b"NRRD0004\nno colon here\n\n",
        # DimSize with fewer values than NDims
        b"ObjectType = Image\nNDims = 3\nDimSize = 4 3\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n",
        # negative HeaderSize and non-integer channel count
        b"ObjectType = Image\nNDims = 3\nDimSize = 4 3 2\nElementType = MET_UCHAR\nHeaderSize = -5\n"
        b"ElementNumberOfChannels = 2.5\nElementDataFile = LOCAL\n",
    ],
)
def test_fuzz_findings(tmp_path, header):
    path = tmp_path / ("f.nrrd" if header.startswith(b"NRRD") else "f.mha")
    path.write_bytes(header + bytes(24))
    with pytest.raises(IousguideError):
        with open_source(path) as source:
            for _ in source:
                pass


@pytest.mark.parametrize("number", ["inf", "-inf", "nan", "x"])
def test_a_frame_number_that_is_no_integer_is_dropped_not_a_crash(tmp_path, number):
    """Found by the fuzzer: ``Seq_Frame0000_FrameNumber = inf`` raised OverflowError from
    int(float("inf")). The frame reads; it just carries no frame number."""
    path = tmp_path / "f.mha"
    header = ("ObjectType = Image\nNDims = 3\nDimSize = 4 3 1\nElementType = MET_UCHAR\n"
              "UltrasoundImageOrientation = MF\n"
              f"Seq_Frame0000_FrameNumber = {number}\nElementDataFile = LOCAL\n")
    path.write_bytes(header.encode() + bytes(12))
    with open_source(path) as source:
        frames = list(source)
    assert len(frames) == 1 and "frame_number" not in frames[0].extra
