"""Frame sources: recorded files, capture cards, network streams, OpenIGTLink; the recorder."""

from iousguide.acquisition.base import IndexedSource, Source, SourceHealth, SourceInfo  # noqa: F401
from iousguide.acquisition.registry import SUPPORTED_FORMATS_TEXT, open_source  # noqa: F401
