"""dustmaps_ext: fast, careful access to the DECaPS and Wang et al. (2025) 3D dust maps.

The query classes live in submodules and plug into :mod:`dustmaps`::

    from dustmaps_ext.decaps import DECaPSQuery, DECaPSQueryLite

Importing the top-level package is cheap: it does not import numba, h5py or
astropy until a submodule that needs them is imported.
"""

from ._version import __version__

__all__ = ["__version__"]
