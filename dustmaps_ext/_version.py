"""The package version, in one place (``setup.cfg`` and :mod:`dustmaps_ext` read it)."""

__version__ = "0.2.0.dev0"
