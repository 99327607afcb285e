"""The guidance window: the only package that imports PySide6 / pyqtgraph."""
