"""The ferkeras command line: a thin click layer over the ferkeras library (installed as ferkeras.cli)."""
