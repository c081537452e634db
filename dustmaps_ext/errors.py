"""Every exception and warning of :mod:`dustmaps_ext` that a user may want to catch.

Map files
    :class:`MapFileError` -- a map file is missing pieces, truncated, unfinished or not a
    map of the expected kind (a subclass of :class:`dustmaps.dustexceptions.Error`, like the
    errors of dustmaps itself).

Downloads (``fetch()`` of every map and ``dustmaps-ext fetch``)
    :class:`DownloadError` (an :class:`OSError`) and its subclasses
    :class:`ChecksumError`, :class:`DownloadLockedError`, :class:`InsufficientSpaceError`,
    :class:`DataverseError` and :class:`InvalidDownloadError`; :class:`FetchConsentError`
    when a large download needs consent that was not given.

Warnings
    :class:`LayoutPerformanceWarning` -- a query class reads a file layout that is slow for
    it.

Example
-------
>>> from dustmaps_ext.errors import DownloadError, MapFileError
>>> issubclass(MapFileError, Exception) and issubclass(DownloadError, OSError)
True
"""

from __future__ import annotations

from dustmaps.dustexceptions import Error as DustmapsError

__all__ = [
    "MapFileError",
    "DownloadError",
    "ChecksumError",
    "DownloadLockedError",
    "InsufficientSpaceError",
    "DataverseError",
    "InvalidDownloadError",
    "FetchConsentError",
    "LayoutPerformanceWarning",
    "DataDirWarning",
    "OutsideFetchedRegionError",
    "TransferBudgetError",
]


class MapFileError(DustmapsError):
    """A map file is missing pieces, truncated, unfinished or not a map of this kind."""


class DownloadError(OSError):
    """A download could not be completed (network, server or verification failure)."""


class ChecksumError(DownloadError):
    """A file's size or checksum differs from the one published for it."""


class DownloadLockedError(DownloadError):
    """Another process (or thread) is already downloading the same file."""


class InsufficientSpaceError(DownloadError):
    """The disk does not have enough free space for the download and what follows it."""


class DataverseError(DownloadError):
    """The dataset or the requested file is not where it should be."""


class InvalidDownloadError(DownloadError):
    """The downloaded bytes are not the expected file (e.g. an HTML error page)."""


class FetchConsentError(RuntimeError):
    """A large download needs consent that was not (or could not be) given."""


class LayoutPerformanceWarning(UserWarning):
    """A query class reads a layout that is slow for it (the published one, for the Lite class)."""


class DataDirWarning(UserWarning):
    """dustmaps' data directory lies inside the Python environment (its default), where the
    maps would fill the disk that holds the environment and be lost with it."""


class TransferBudgetError(DownloadError):
    """A remote read would exceed the bytes or requests allowed for the transfer."""


class OutsideFetchedRegionError(ValueError):
    """A coordinate lies in the DECaPS footprint but outside every region of a cutout."""
