"""One error family for iousguide.

Every error a user can cause (bad file, bad flag, vanished device) is an
:class:`IousguideError`; the CLI prints its message on one line and exits 2.
"""


class IousguideError(Exception):
    """Base of every error iousguide raises on purpose."""


class SourceError(IousguideError):
    """A frame source could not be opened or read."""


class UnsupportedFormatError(SourceError):
    """The input is not a format iousguide reads (or the path does not exist)."""


class CorruptDataError(SourceError):
    """The file opened but its header or data are inconsistent, truncated or corrupt."""


class SourceTimeout(SourceError):
    """``read(timeout_s=...)`` waited and no frame came."""


class EndOfSource(SourceError):
    """A finite source has no more frames."""


class SourceClosedError(SourceError):
    """The source was used after ``close()``."""


class DeviceLostError(SourceError):
    """A live device or stream disappeared and could not be reopened."""


class CalibrationError(IousguideError):
    """A calibration preset or calibration input is invalid."""


class AnalysisError(IousguideError):
    """Analysis was asked something it cannot answer (e.g. a seed outside the image)."""


class SettingsError(IousguideError):
    """An option value is out of range or inconsistent."""
