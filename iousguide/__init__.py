"""iousguide: intraoperative ultrasound guidance for parenchymal-sparing liver surgery.

Layers (dependencies point one way, Qt only in ``display``)::

    frames, errors, calibration -> acquisition | analysis -> guidance -> pipeline -> display
"""

__version__ = "0.1.0"

from iousguide.errors import IousguideError  # noqa: F401
from iousguide.frames import Frame  # noqa: F401
