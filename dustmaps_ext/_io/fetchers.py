"""``fetch()`` for each map: where the released files are, where they go, what follows them.

All three fetchers go through the one engine, :func:`.download.download`, and differ only in
what they find, verify and do after the download:

* :func:`fetch_decaps` finds ``decaps_mean_and_samples.h5`` (or ``decaps_mean.h5``) in the
  Dataverse dataset doi:10.7910/DVN/J9JCKO, checks its MD5 against the dataset's metadata and,
  unless ``repack=False``, converts it to the fast layout of the query classes
  (:func:`dustmaps_ext.decaps.repack`);
* :func:`fetch_bayestar2019` puts ``bayestar2019.h5`` (doi:10.7910/DVN/2EJ9TX) where
  ``dustmaps.bayestar.BayestarQuery(version='bayestar2019')`` looks for it;
* :func:`fetch_wang2025` downloads ``data_v3.fits.gz`` (GitHub release, NADC mirror as
  fallback), checks that it is an intact gzip of the expected FITS table, unpacks it and
  converts it for the evaluator (:func:`dustmaps_ext.wang2025.convert_table`).

Files go under ``dustmaps``' data directory (``dustmaps.std_paths.data_dir()``, read at call
time). A download larger than :data:`LARGE_DOWNLOAD_BYTES` asks for confirmation at a terminal
and, without a terminal, fails with a message saying how to consent (``silence_warnings=True``,
or ``--yes`` on the command line); it never waits for an answer nobody can give.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import sys
import zlib
from pathlib import Path

from ..errors import (
    DownloadError,
    DownloadLockedError,
    FetchConsentError,
    InsufficientSpaceError,
    InvalidDownloadError,
)
from . import bayestar19 as _bayestar19
from . import decaps as _decaps
from . import wang2025 as _wang2025
from .cutout import decaps_cutout_path, fetch_cutout, index_path, regions_argument
from .dataverse import find_file, resolve_base_url
from .decaps import REPACK_LAYOUTS, decaps_paths, repack_peak_bytes, repacked_bytes
from .decaps_compact import repack
from .download import BLOCK_SIZE, check_free_space, download, file_lock, format_bytes
from .files import atomic_output, warn_if_inside_environment, write_json_atomic
from .wang2025 import (
    check_fits_header,
    check_fits_table,
    convert_table,
    read_fits_table_header,
    wang2025_paths,
)

__all__ = [
    "FetchConsentError",
    "InvalidDownloadError",
    "LARGE_DOWNLOAD_BYTES",
    "decaps_paths",
    "fetch_bayestar2019",
    "fetch_decaps",
    "fetch_wang2025",
    "wang2025_paths",
]

logger = logging.getLogger(__name__)

#: Downloads at least this large ask for consent first (like dustmaps' DECaPS fetch).
LARGE_DOWNLOAD_BYTES = 1_000_000_000

# Names this module had before each format got its home: read-only views of the homes'
# facts (set those on the homes, e.g. dustmaps_ext._io.wang2025.URL, to change them).
_FORMERLY_HERE = {
    "DECAPS_DOI": (_decaps, "DOI"), "BAYESTAR2019_DOI": (_bayestar19, "DOI"),
    "DECAPS_NPIX": (_decaps, "NPIX"), "DECAPS_NSAMPLES": (_decaps, "N_SAMPLES"),
    "DECAPS_NDIST": (_decaps, "N_DIST"), "WANG2025_URL": (_wang2025, "URL"),
    "WANG2025_MIRROR_URL": (_wang2025, "MIRROR_URL"), "WANG2025_URL_ENV": (_wang2025, "URL_ENV"),
    "WANG2025_NROWS": (_wang2025, "NROWS"), "WANG2025_COLUMNS": (_wang2025, "COLUMNS"),
}


def __getattr__(name: str):
    if name in _FORMERLY_HERE:
        module, attr = _FORMERLY_HERE[name]
        return getattr(module, attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- converters
# Seams for the tests, which replace the (slow) conversions.


def _repack_hook(src: Path, dst: Path, *, progress: bool, layout: str = "compact") -> Path:
    """Convert a published-layout DECaPS file to a fast layout."""
    return Path(repack(src, dst, progress=progress, layout=layout))


def _convert_hook(src: Path, dst: Path, *, progress: bool) -> Path:
    """Convert ``data_v3.fits`` to the evaluator's layout."""
    return Path(convert_table(src, dst, progress=progress))


# --------------------------------------------------------------------------- helpers


def _retry():
    from . import download as _download  # the current DEFAULT_RETRY (tests replace it)

    return _download.DEFAULT_RETRY


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _confirm(message: str, silence_warnings: bool) -> None:
    """Ask at a terminal; without one, refuse with instructions. Never blocks a batch job."""
    if silence_warnings:
        return
    stdin = sys.stdin
    isatty = getattr(stdin, "isatty", None)
    if stdin is None or isatty is None or not isatty():
        raise FetchConsentError(
            f"{message} No terminal is attached to ask for confirmation: pass "
            "silence_warnings=True to fetch() (or --yes to `dustmaps-ext fetch`) to consent.")
    answer = input(f"{message}\nProceed? [yes/no]: ")
    if answer.strip().lower() not in ("y", "yes"):
        raise FetchConsentError("download cancelled (the answer was not 'yes'); nothing was "
                                "downloaded")


def _record_path(product: Path) -> Path:
    return product.with_name(product.name + ".complete.json")


def _read_record(product: Path) -> dict | None:
    """The completion record of a converted file, if it exists and still describes the file."""
    try:
        record = json.loads(_record_path(product).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("size") != _size(product) or not product.exists():
        return None
    return record


def _write_record(product: Path, **source) -> None:
    write_json_atomic(_record_path(product), {"size": _size(product), **source}, indent=1)


def _drop_product(product: Path) -> None:
    _record_path(product).unlink(missing_ok=True)
    product.unlink(missing_ok=True)


# --------------------------------------------------------------------------- DECaPS


def fetch_decaps(mean_only: bool = False, silence_warnings: bool = False, clobber: bool = False,
                 repack: bool = True, base_url: str | None = None, *, progress: bool = True,
                 keep_original: bool = True, layout: str = "compact", region=None) -> Path:
    """Download the DECaPS 3D dust map, verify it and prepare it for fast queries.

    The file is looked up by DOI (:data:`dustmaps_ext._io.decaps.DOI`) through the Dataverse API, downloaded
    into ``<data_dir>/decaps/`` (resumable, retried, verified against the published MD5) and,
    with ``repack=True``, converted to the fast layout of the query classes
    (``<name>_repacked.h5`` beside it).

    Parameters
    ----------
    mean_only : bool
        Fetch ``decaps_mean.h5`` (about 8 GB; only ``mode='mean'`` queries) instead of
        ``decaps_mean_and_samples.h5`` (about 33.8 GB).
    silence_warnings : bool
        Consent to the large download without being asked. Without it, a terminal session is
        asked, and a session without a terminal gets :class:`FetchConsentError`.
    clobber : bool
        Download (and repack) again even if the files are present.
    repack : bool
        Convert the download to a fast layout (see ``layout``). Skipped when a complete
        repacked file is present.
    base_url : str, optional
        Dataverse installation; default ``$DUSTMAPS_EXT_DATAVERSE_URL`` or
        https://dataverse.harvard.edu.
    progress : bool
        Show progress bars (stderr).
    keep_original : bool
        Keep the published file after a successful repack (default: the only copy with the
        release's MD5). With False it is deleted once the repacked file is complete, which
        frees 33.8 GB (about 8 GB for mean only).
    layout : {'compact', 'pixel-major'}
        Layout of the repacked file. ``'compact'`` (default): lossless, an estimated 11.4 GB
        for mean and samples (4.9 GB mean only; measured on a realistic simulation, the real
        values may compress differently), needing twice that for a moment while it is
        written. ``'pixel-major'``: uncompressed, 74.0 GB (12.3 GB mean only).
    region : (l_deg, b_deg, radius_deg) or sequence of them, keyword-only
        Fetch only this sky cone (Galactic degrees): the HDF5 chunks of the published file
        that hold its pixels (HEALPix inclusive disc at the map's nside) are read through
        HTTP Range requests and added to the local cutout
        ``<data_dir>/decaps/<published stem>_cutout.h5``, which is returned. Several calls
        add regions to the same cutout; ``clobber=True`` starts a new one; ``repack``, ``keep_original``
        and ``layout`` do not apply (the cutout is written in the compact layout). The query classes answer on the cutout as on the
        full map inside its regions and refuse positions of the footprint outside them.

    Returns
    -------
    Path
        The repacked file (``repack=True``) or the published file.

    Raises
    ------
    FetchConsentError
        The download needs consent (see ``silence_warnings``).
    DownloadError
        The file could not be found, downloaded or verified (subclasses say which).
    """
    if region is not None:
        return _fetch_decaps_region(region, mean_only, silence_warnings, clobber, base_url,
                                    progress)
    if layout not in REPACK_LAYOUTS:
        raise ValueError(f"layout must be one of {REPACK_LAYOUTS}; got {layout!r}")
    original, repacked = decaps_paths(mean_only)
    directory = original.parent
    directory.mkdir(parents=True, exist_ok=True)
    with file_lock(directory / f"{original.name}.fetch"):
        if repack and not clobber and _read_record(repacked) is not None:
            logger.info("the repacked DECaPS map %s is present and complete", repacked)
            _dispose_original(original, repacked, keep_original)
            return repacked

        needs_download = clobber or not original.exists()
        if needs_download:  # before any network access: a refusal touches nothing
            _confirm_decaps_download(original, mean_only, repack, base_url, silence_warnings, layout)
        info = find_file(_decaps.DOI, original.name, base_url, retry=_retry())
        if clobber and repack:
            _drop_product(repacked)
        repack_bytes = (max(0, repack_peak_bytes(mean_only, info.size, layout) - _size(repacked))
                        if repack else 0)
        if needs_download:
            part = original.with_name(original.name + ".part")
            to_download = (info.size or 0) - (0 if clobber else _size(part))
            check_free_space(directory, to_download + repack_bytes,
                             what=f"{original.name}" + (" and its repacked copy" if repack else ""))
        download(info.access_url, original, expected_hash=info.checksum,
                 hash_name=info.hash_name or "md5", expected_size=info.size, clobber=clobber,
                 progress=progress, extra_bytes=repack_bytes, retry=_retry())
        if not repack:
            return original

        # A repacked file without a completion record is an interrupted repack: repack()
        # resumes it. (A complete one returned early above; clobber=True removed it.)
        check_free_space(directory, max(0, repack_peak_bytes(mean_only, _size(original), layout)
                                        - _size(repacked)),
                         what=f"repacking {original.name}")
        logger.info("repacking %s into %s (%s layout)", original, repacked, layout)
        result = _repack_hook(original, repacked, progress=progress, layout=layout)
        _write_record(result, source=original.name, hash_name=info.hash_name,
                      checksum=info.checksum)
        _dispose_original(original, result, keep_original)
        return result


def _fetch_decaps_region(region, mean_only: bool, silence_warnings: bool, clobber: bool,
                         base_url: str | None, progress: bool) -> Path:
    """``fetch_decaps(region=...)``: add sky cones to the local cutout (see
    :mod:`dustmaps_ext._io.cutout`); the published file is found by DOI as for a full fetch."""
    regions = regions_argument(region)
    original, _ = decaps_paths(mean_only)
    dest = decaps_cutout_path(mean_only)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if clobber:
        with file_lock(dest):
            dest.unlink(missing_ok=True)
            index_path(dest).unlink(missing_ok=True)
    info = find_file(_decaps.DOI, original.name, base_url, retry=_retry())

    def confirm(value_bytes: int) -> None:
        if value_bytes >= LARGE_DOWNLOAD_BYTES:
            _confirm(f"About to download {format_bytes(value_bytes)} of {original.name} from "
                     f"{info.base_url} for the region(s) "
                     f"{', '.join(str(r) for r in regions)} into {dest}.", silence_warnings)

    return fetch_cutout(info.access_url, dest, regions, size=info.size, checksum=info.checksum,
                        filename=info.filename, retry=_retry(), confirm=confirm,
                        progress=progress)


def _confirm_decaps_download(original: Path, mean_only: bool, repack: bool,
                             base_url: str | None, silence_warnings: bool, layout: str) -> None:
    """Ask for consent to the DECaPS download from the release's published size.

    It runs before the Dataverse metadata is read, so an offline user is asked at once and a
    refusal (or a session without a terminal) makes no network request.
    """
    published = _decaps.PUBLISHED_BYTES[_decaps.MEAN_ONLY if mean_only else _decaps.MEAN_AND_SAMPLES]
    if published < LARGE_DOWNLOAD_BYTES:
        return
    what = (f"About to download {original.name} (about {format_bytes(published)}) from "
            f"{resolve_base_url(base_url)} into {original.parent}")
    if repack:
        what += (f", then repack it for fast queries (about "
                 f"{format_bytes(repacked_bytes(mean_only, layout=layout))} more, an estimate)")
    if not mean_only:
        what += "; mean_only=True fetches the mean map alone (about 8 GB)"
    _confirm(what + ".", silence_warnings)


def _dispose_original(original: Path, repacked: Path, keep_original: bool) -> None:
    if not original.exists():
        return
    if keep_original:
        logger.info("kept the published file %s (%s); the query classes read %s, so the "
                    "original may be deleted to free that space", original,
                    format_bytes(_size(original)), repacked)
    else:
        size = _size(original)
        original.unlink()
        logger.info("deleted the published file %s to free %s; %s holds the map", original,
                    format_bytes(size), repacked)


# --------------------------------------------------------------------------- Bayestar19


def fetch_bayestar2019(clobber: bool = False, base_url: str | None = None, *,
                       silence_warnings: bool = False, progress: bool = True) -> Path:
    """Download ``bayestar2019.h5`` to where dustmaps' ``BayestarQuery`` reads it.

    The file goes to ``<data_dir>/bayestar/bayestar2019.h5``, the default path of
    ``dustmaps.bayestar.BayestarQuery(version='bayestar2019')``, and is verified against the
    checksum of its Dataverse record (:data:`dustmaps_ext._io.bayestar19.DOI`).

    Parameters
    ----------
    clobber : bool
        Download again even if the file is present.
    base_url : str, optional
        Dataverse installation (default as in :func:`fetch_decaps`).
    silence_warnings : bool
        Consent to a download of :data:`LARGE_DOWNLOAD_BYTES` or more without being asked.
    progress : bool
        Show a progress bar (stderr).

    Returns
    -------
    Path
        The verified file.
    """
    dest = _bayestar19.bayestar_dir() / _bayestar19.FILE_NAME
    warn_if_inside_environment(dest.parent.parent)
    dest.parent.mkdir(parents=True, exist_ok=True)
    info = find_file(_bayestar19.DOI, dest.name, base_url, retry=_retry())
    if (clobber or not dest.exists()) and (info.size or 0) >= LARGE_DOWNLOAD_BYTES:
        _confirm(f"About to download {dest.name} ({format_bytes(info.size)}) from "
                 f"{info.base_url} into {dest.parent}.", silence_warnings)
    return download(info.access_url, dest, expected_hash=info.checksum,
                    hash_name=info.hash_name or "md5", expected_size=info.size, clobber=clobber,
                    progress=progress, retry=_retry())


# --------------------------------------------------------------------------- Wang et al. 2025


def _wang2025_urls(url: str | None) -> list[str]:
    primary = url or os.environ.get(_wang2025.URL_ENV) or _wang2025.URL
    mirror = _wang2025.MIRROR_URL
    return [primary] + ([mirror] if mirror != primary else [])


def _looks_like_html(head: bytes) -> bool:
    text = head.lstrip().lower()
    return text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body"))


def _check_wang_gzip(path: Path, source: str) -> None:
    """The download check, in one pass: gzip magic bytes, FITS headers, then the full CRC."""
    where = f"the file from {source}"
    with open(path, "rb") as fh:
        head = fh.read(256)
    if head[:2] != b"\x1f\x8b":
        kind = ("an HTML page (the server's error or login page?)" if _looks_like_html(head)
                else f"not gzip data (it starts with {head[:16]!r})")
        raise InvalidDownloadError(f"{where} is {kind}, not data_v3.fits.gz")
    try:
        with gzip.open(path, "rb") as fh:
            try:
                header, _ = read_fits_table_header(fh, f"{where} is a gzip file, but it")
            finally:
                while fh.read(BLOCK_SIZE):  # the rest, so that the CRC is checked
                    pass
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, InvalidDownloadError):
            raise
        raise InvalidDownloadError(f"{where} is a damaged gzip file ({exc})") from exc
    check_fits_header(header, f"{where} is a gzip file, but it")


def _gzip_isize(path: Path) -> int:
    """Uncompressed size modulo 2**32, from the gzip trailer."""
    with open(path, "rb") as fh:
        fh.seek(-4, os.SEEK_END)
        return int.from_bytes(fh.read(4), "little")


def _unpack(gz: Path, dest: Path, progress: bool) -> None:
    from ..progress import tqdm

    estimate = _gzip_isize(gz)
    check_free_space(dest.parent, estimate, what=f"unpacking {gz.name}")
    with atomic_output(dest) as part:
        with gzip.open(gz, "rb") as src, open(part, "wb") as out, tqdm(
                total=estimate, unit="B", unit_scale=True, disable=not progress,
                desc=f"unpack {gz.name}", leave=False) as bar:
            while block := src.read(BLOCK_SIZE):
                out.write(block)
                bar.update(len(block))
        check_fits_table(part)


def fetch_wang2025(clobber: bool = False, url: str | None = None, *, progress: bool = True) -> Path:
    """Download the parametric map of Wang et al. (2025), check it and prepare it.

    ``data_v3.fits.gz`` is downloaded from ``url`` (default ``$DUSTMAPS_EXT_WANG2025_URL`` or
    the GitHub release, :data:`dustmaps_ext._io.wang2025.URL`), falling back to the NADC mirror
    (:data:`dustmaps_ext._io.wang2025.MIRROR_URL`) when that fails. It must be an intact gzip (full CRC check)
    of a FITS table with every column of the model and one row per nside-1024 pixel; then it
    is unpacked to ``<data_dir>/wang2025/data_v3.fits`` (the ``.gz`` is removed) and converted
    to the evaluator's layout (``data_v3_columns.h5``).

    Parameters
    ----------
    clobber : bool
        Download and convert again even if the files are present.
    url : str, optional
        Primary URL of ``data_v3.fits.gz`` (e.g. a mirror or a local server).
    progress : bool
        Show progress bars (stderr).

    Returns
    -------
    Path
        The converted table that the evaluator reads.

    Raises
    ------
    InvalidDownloadError
        Every source answered with something that is not the table (e.g. an HTML page).
    DownloadError
        No source could be downloaded.
    """
    gz, fits_path, columns = wang2025_paths()
    directory = gz.parent
    warn_if_inside_environment(directory.parent)
    directory.mkdir(parents=True, exist_ok=True)
    with file_lock(directory / f"{fits_path.name}.fetch"):
        if clobber:
            _drop_product(columns)
            fits_path.unlink(missing_ok=True)
            gz.unlink(missing_ok=True)
            gz.with_name(gz.name + ".part").unlink(missing_ok=True)
        if fits_path.exists():
            try:
                check_fits_table(fits_path)
            except InvalidDownloadError as exc:
                raise InvalidDownloadError(f"{exc}. Delete it or pass clobber=True to download "
                                           "it again") from exc
        else:
            _obtain_wang_gzip(gz, _wang2025_urls(url), progress, clobber)
            logger.info("unpacking %s", gz)
            _unpack(gz, fits_path, progress)
            gz.unlink()
        record = _read_record(columns)
        if record is not None and record.get("source_size") == _size(fits_path):
            logger.info("the converted table %s is present and complete", columns)
            return columns
        check_free_space(directory, max(0, _size(fits_path) - _size(columns)),
                         what=f"converting {fits_path.name}")
        logger.info("converting %s into %s", fits_path, columns)
        result = _convert_hook(fits_path, columns, progress=progress)
        _write_record(result, source=fits_path.name, source_size=_size(fits_path))
        return result


def _obtain_wang_gzip(gz: Path, sources: list[str], progress: bool, clobber: bool) -> None:
    if gz.exists() and not clobber:  # left by a run that stopped before unpacking
        try:
            _check_wang_gzip(gz, str(gz))
            return
        except InvalidDownloadError as exc:
            logger.warning("%s; downloading it again", exc)
            gz.unlink()
    unpacked_estimate = _wang2025.NROWS * len(_wang2025.COLUMNS) * 8
    errors = []
    for source in sources:
        try:
            download(source, gz, progress=progress, extra_bytes=2 * unpacked_estimate,
                     validate=lambda p, s=source: _check_wang_gzip(p, s), retry=_retry())
            return
        except (DownloadLockedError, InsufficientSpaceError):
            raise
        except DownloadError as exc:
            errors.append(f"{source}: {exc}")
            # bytes from one source are not resumed from another
            gz.with_name(gz.name + ".part").unlink(missing_ok=True)
            logger.warning("could not get data_v3.fits.gz from %s: %s", source, exc)
    raise DownloadError("could not download data_v3.fits.gz from any source:\n  "
                        + "\n  ".join(errors))
