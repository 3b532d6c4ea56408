"""ferkeras: facial expression recognition on FER2013 with a compact Keras CNN."""

__version__ = "0.1.0"
