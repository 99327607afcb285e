"""iousguide: intraoperative ultrasound guidance for parenchymal-sparing liver surgery.

Layers (dependencies point one way, Qt only in ``display``)::

    frames, errors, calibration -> acquisition | analysis -> guidance -> pipeline -> display
"""

__version__ = "0.1.0"

import os as _os

# FFmpeg and OpenCV print their own warnings on stderr for every odd file; our
# errors already say what is wrong in one line. Set before cv2 is imported.
_os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
_os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
_os.environ.setdefault("OPENCV_VIDEOIO_DEBUG", "0")

from iousguide.errors import IousguideError  # noqa: F401
from iousguide.frames import Frame  # noqa: F401
