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
import warnings
import zlib
from pathlib import Path

from .dataverse import find_file
from .download import (
    BLOCK_SIZE,
    DownloadError,
    DownloadLockedError,
    InsufficientSpaceError,
    check_free_space,
    download,
    file_lock,
    format_bytes,
)

__all__ = [
    "BAYESTAR2019_DOI",
    "DECAPS_DOI",
    "FetchConsentError",
    "InvalidDownloadError",
    "LARGE_DOWNLOAD_BYTES",
    "WANG2025_MIRROR_URL",
    "WANG2025_URL",
    "WANG2025_URL_ENV",
    "decaps_paths",
    "fetch_bayestar2019",
    "fetch_decaps",
    "fetch_wang2025",
    "wang2025_paths",
]

logger = logging.getLogger(__name__)

#: Dataverse DOI of the DECaPS 3D dust map release (Zucker et al. 2025).
DECAPS_DOI = "10.7910/DVN/J9JCKO"
#: Dataverse DOI of the Bayestar19 release (Green et al. 2019).
BAYESTAR2019_DOI = "10.7910/DVN/2EJ9TX"

#: Pixels, samples and distance bins of the DECaPS release (for the repacked-size estimate).
DECAPS_NPIX = 51_415_400
DECAPS_NSAMPLES = 5
DECAPS_NDIST = 120
# published sizes of the release (Dataverse doi:10.7910/DVN/J9JCKO), for scaling the
# repacked-size estimate
DECAPS_SAMPLES_BYTES = 33_800_000_000
DECAPS_MEAN_BYTES = 8_000_000_000

#: Downloads at least this large ask for consent first (like dustmaps' DECaPS fetch).
LARGE_DOWNLOAD_BYTES = 1_000_000_000

#: Primary URL of the parametric map's table (GitHub release of dustmaps3d).
WANG2025_URL = "https://github.com/Grapeknight/dustmaps3d/releases/download/v3/data_v3.fits.gz"
#: Mirror at the China-VO NADC (record DOI 10.12149/101619), tried when the primary fails.
WANG2025_MIRROR_URL = "https://nadc.china-vo.org/res/file_upload/download?id=51939"
#: Environment variable that replaces :data:`WANG2025_URL`.
WANG2025_URL_ENV = "DUSTMAPS_EXT_WANG2025_URL"

#: Rows of ``data_v3.fits``: one per HEALPix RING pixel at nside 1024. The evaluator needs the
#: full table, so a table of another length is refused (tests shrink this to stay fast).
WANG2025_NROWS = 12 * 1024**2
#: Columns ``data_v3.fits`` must have (as dustmaps3d 2.2.13 reads them; kpc and mag).
WANG2025_COLUMNS = (
    "b_lim", "bubble", "diffuse_dust_rho", "h",
    "distance_1", "span_1", "Cum_EBV_1", "distance_2", "span_2", "Cum_EBV_2",
    "distance_3", "span_3", "Cum_EBV_3", "distance_4", "span_4", "Cum_EBV_4",
    "sigma", "sigma_0_2", "sigma_1_4", "sigma_2_max", "max_distance",
)


class FetchConsentError(RuntimeError):
    """A large download needs consent that was not (or could not be) given."""


class InvalidDownloadError(DownloadError):
    """The downloaded bytes are not the expected file (e.g. an HTML error page)."""


# --------------------------------------------------------------------------- hooks


def _repack_hook(src: Path, dst: Path, *, progress: bool) -> Path:
    """Convert a published-layout DECaPS file to the fast layout (lazy import)."""
    from ..decaps import repack

    return Path(repack(src, dst, progress=progress))


def _convert_hook(src: Path, dst: Path, *, progress: bool) -> Path:
    """Convert ``data_v3.fits`` to the evaluator's layout (lazy import)."""
    from ..wang2025 import convert_table

    return Path(convert_table(src, dst, progress=progress))


# --------------------------------------------------------------------------- helpers


def _data_dir() -> Path:
    from dustmaps.std_paths import data_dir

    return Path(data_dir())


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
    tmp = _record_path(product).with_suffix(".tmp")
    tmp.write_text(json.dumps({"size": _size(product), **source}, indent=1))
    os.replace(tmp, _record_path(product))


def _drop_product(product: Path) -> None:
    _record_path(product).unlink(missing_ok=True)
    product.unlink(missing_ok=True)


# --------------------------------------------------------------------------- DECaPS


def decaps_paths(mean_only: bool = False) -> tuple[Path, Path]:
    """(published file, repacked file) of the DECaPS map under the current data directory."""
    directory = _data_dir() / "decaps"
    original = directory / ("decaps_mean.h5" if mean_only else "decaps_mean_and_samples.h5")
    return original, directory / f"{original.stem}_repacked.h5"


def _repacked_bytes(mean_only: bool, published_bytes: int | None = None) -> int:
    """Size of the repacked copy: uncompressed float16 values of every pixel.

    For the real release that is 74.0 GB (12.3 GB mean-only). When the published file's
    size is known (a mirror or a test server may serve a smaller map), the estimate scales
    with it by the real release's ratio of repacked to published bytes.
    """
    values = DECAPS_NDIST * (1 if mean_only else 1 + DECAPS_NSAMPLES)
    real = DECAPS_NPIX * values * 2
    if not published_bytes:
        return real
    real_published = DECAPS_MEAN_BYTES if mean_only else DECAPS_SAMPLES_BYTES
    return int(published_bytes * real / real_published)


def fetch_decaps(mean_only: bool = False, silence_warnings: bool = False, clobber: bool = False,
                 repack: bool = True, base_url: str | None = None, *, progress: bool = True,
                 keep_original: bool = True, region=None) -> Path:
    """Download the DECaPS 3D dust map, verify it and prepare it for fast queries.

    The file is looked up by DOI (:data:`DECAPS_DOI`) through the Dataverse API, downloaded
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
        Convert the download to the fast layout (needs about 74 GB more for mean and samples,
        12.3 GB for mean only). Skipped when a complete repacked file is present.
    base_url : str, optional
        Dataverse installation; default ``$DUSTMAPS_EXT_DATAVERSE_URL`` or
        https://dataverse.harvard.edu.
    progress : bool
        Show progress bars (stderr).
    keep_original : bool
        Keep the published file after a successful repack (default). With False it is deleted
        once the repacked file is complete.
    region : (l_deg, b_deg, radius_deg) or sequence of them, keyword-only
        Fetch only this sky cone (Galactic degrees): the HDF5 chunks of the published file
        that hold its pixels (HEALPix inclusive disc at the map's nside) are read through
        HTTP Range requests and added to the local cutout
        ``<data_dir>/decaps/<published stem>_cutout.h5``, which is returned. Several calls
        add regions to the same cutout; ``clobber=True`` starts a new one; ``repack`` and
        ``keep_original`` do not apply. The query classes answer on the cutout as on the
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
        from .cutout import fetch_decaps_region

        return fetch_decaps_region(region, mean_only, silence_warnings, clobber, base_url,
                                   progress=progress)
    original, repacked = decaps_paths(mean_only)
    directory = original.parent
    directory.mkdir(parents=True, exist_ok=True)
    with file_lock(directory / f"{original.name}.fetch"):
        if repack and not clobber and _read_record(repacked) is not None:
            logger.info("the repacked DECaPS map %s is present and complete", repacked)
            _dispose_original(original, repacked, keep_original)
            return repacked

        info = find_file(DECAPS_DOI, original.name, base_url, retry=_retry())
        if clobber and repack:
            _drop_product(repacked)
        repack_bytes = (max(0, _repacked_bytes(mean_only, info.size) - _size(repacked))
                        if repack else 0)
        if clobber or not original.exists():
            part = original.with_name(original.name + ".part")
            to_download = (info.size or 0) - (0 if clobber else _size(part))
            check_free_space(directory, to_download + repack_bytes,
                             what=f"{original.name}" + (" and its repacked copy" if repack else ""))
            if (info.size or 0) >= LARGE_DOWNLOAD_BYTES:
                what = (f"About to download {original.name} ({format_bytes(info.size)}) from "
                        f"{info.base_url} into {directory}")
                if repack:
                    what += (f", then repack it for fast queries (about "
                             f"{format_bytes(_repacked_bytes(mean_only, info.size))} more)")
                if not mean_only:
                    what += "; mean_only=True fetches the mean map alone (about 8 GB)"
                _confirm(what + ".", silence_warnings)
        download(info.access_url, original, expected_hash=info.checksum,
                 hash_name=info.hash_name or "md5", expected_size=info.size, clobber=clobber,
                 progress=progress, extra_bytes=repack_bytes, retry=_retry())
        if not repack:
            return original

        # A repacked file without a completion record is an interrupted repack: repack()
        # resumes it. (A complete one returned early above; clobber=True removed it.)
        check_free_space(directory, max(0, _repacked_bytes(mean_only, _size(original)) - _size(repacked)),
                         what=f"repacking {original.name}")
        logger.info("repacking %s into %s", original, repacked)
        result = _repack_hook(original, repacked, progress=progress)
        _write_record(result, source=original.name, hash_name=info.hash_name,
                      checksum=info.checksum)
        _dispose_original(original, result, keep_original)
        return result


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
    checksum of its Dataverse record (:data:`BAYESTAR2019_DOI`).

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
    dest = _data_dir() / "bayestar" / "bayestar2019.h5"
    dest.parent.mkdir(parents=True, exist_ok=True)
    info = find_file(BAYESTAR2019_DOI, dest.name, base_url, retry=_retry())
    if (clobber or not dest.exists()) and (info.size or 0) >= LARGE_DOWNLOAD_BYTES:
        _confirm(f"About to download {dest.name} ({format_bytes(info.size)}) from "
                 f"{info.base_url} into {dest.parent}.", silence_warnings)
    return download(info.access_url, dest, expected_hash=info.checksum,
                    hash_name=info.hash_name or "md5", expected_size=info.size, clobber=clobber,
                    progress=progress, retry=_retry())


# --------------------------------------------------------------------------- Wang et al. 2025


def wang2025_paths() -> tuple[Path, Path, Path]:
    """(``data_v3.fits.gz``, ``data_v3.fits``, converted table) under the current data directory."""
    directory = _data_dir() / "wang2025"
    return (directory / "data_v3.fits.gz", directory / "data_v3.fits",
            directory / "data_v3_columns.h5")


def _wang2025_urls(url: str | None) -> list[str]:
    primary = url or os.environ.get(WANG2025_URL_ENV) or WANG2025_URL
    return [primary] + ([WANG2025_MIRROR_URL] if WANG2025_MIRROR_URL != primary else [])


def _looks_like_html(head: bytes) -> bool:
    text = head.lstrip().lower()
    return text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body"))


_FITS_BLOCK = 2880
_MAX_HDUS = 16


def _hdu_data_bytes(header) -> int:
    """Bytes of an HDU's data, padded to whole FITS blocks (FITS standard, section 4.4.1)."""
    naxis = int(header.get("NAXIS", 0))
    if naxis == 0:
        return 0
    n = 1
    for i in range(1, naxis + 1):
        n *= int(header[f"NAXIS{i}"])
    n = abs(int(header["BITPIX"])) // 8 * int(header.get("GCOUNT", 1)) * (
        int(header.get("PCOUNT", 0)) + n)
    return -(-n // _FITS_BLOCK) * _FITS_BLOCK


def _skip(fh, n: int) -> None:
    while n > 0:
        block = fh.read(min(n, BLOCK_SIZE))
        if not block:
            raise EOFError("file ends inside an HDU")
        n -= len(block)


def _read_table_header(fh, where: str):
    """Read FITS headers from a stream up to the first binary table; returns that header.

    Returns ``(header, bytes consumed including the table's data)`` without reading the data.
    """
    from astropy.io import fits

    offset = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a bad header is reported by the exception below
        try:
            for index in range(_MAX_HDUS):
                start = fh.tell() if hasattr(fh, "tell") else None
                header = fits.Header.fromfile(fh)
                if index == 0 and header.get("SIMPLE") is not True:
                    raise ValueError("the first header lacks SIMPLE = T")
                size = (fh.tell() - start) if start is not None else 0
                offset += size + _hdu_data_bytes(header)
                if header.get("XTENSION") == "BINTABLE":
                    return header, offset
                _skip(fh, _hdu_data_bytes(header))
        except (ValueError, KeyError, EOFError, OSError) as exc:
            raise InvalidDownloadError(f"{where} is not a readable FITS file "
                                       f"({type(exc).__name__}: {exc})") from exc
    raise InvalidDownloadError(f"{where} holds no FITS binary table in its first "
                               f"{_MAX_HDUS} HDUs")


def _check_table_header(header, where: str) -> None:
    """The table must have every model column and one row per nside-1024 pixel."""
    names = [str(header.get(f"TTYPE{i}", "")).strip()
             for i in range(1, int(header.get("TFIELDS", 0)) + 1)]
    missing = [c for c in WANG2025_COLUMNS if c not in names]
    if missing:
        raise InvalidDownloadError(f"{where} is not the Wang et al. (2025) table: it lacks the "
                                   f"columns {missing}")
    nrows = int(header.get("NAXIS2", -1))
    if nrows != WANG2025_NROWS:
        raise InvalidDownloadError(f"{where} has {nrows} rows; the Wang et al. (2025) table has "
                                   f"{WANG2025_NROWS} (one per nside-1024 pixel)")


def _check_wang_table(path: Path) -> None:
    """Check a plain ``data_v3.fits`` from its headers, and that its data is all there."""
    with open(path, "rb") as fh:
        header, needed = _read_table_header(fh, str(path))
    _check_table_header(header, str(path))
    if _size(path) < needed:
        raise InvalidDownloadError(f"{path} is truncated: {_size(path)} bytes, its headers "
                                   f"announce {needed}")


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
                header, _ = _read_table_header(fh, f"{where} is a gzip file, but it")
            finally:
                while fh.read(BLOCK_SIZE):  # the rest, so that the CRC is checked
                    pass
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, InvalidDownloadError):
            raise
        raise InvalidDownloadError(f"{where} is a damaged gzip file ({exc})") from exc
    _check_table_header(header, f"{where} is a gzip file, but it")


def _gzip_isize(path: Path) -> int:
    """Uncompressed size modulo 2**32, from the gzip trailer."""
    with open(path, "rb") as fh:
        fh.seek(-4, os.SEEK_END)
        return int.from_bytes(fh.read(4), "little")


def _unpack(gz: Path, dest: Path, progress: bool) -> None:
    from tqdm import tqdm

    part = dest.with_name(dest.name + ".part")
    estimate = _gzip_isize(gz)
    check_free_space(dest.parent, estimate, what=f"unpacking {gz.name}")
    try:
        with gzip.open(gz, "rb") as src, open(part, "wb") as out, tqdm(
                total=estimate, unit="B", unit_scale=True, disable=not progress,
                desc=f"unpack {gz.name}", leave=False) as bar:
            while block := src.read(BLOCK_SIZE):
                out.write(block)
                bar.update(len(block))
            out.flush()
            os.fsync(out.fileno())
        _check_wang_table(part)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)


def fetch_wang2025(clobber: bool = False, url: str | None = None, *, progress: bool = True) -> Path:
    """Download the parametric map of Wang et al. (2025), check it and prepare it.

    ``data_v3.fits.gz`` is downloaded from ``url`` (default ``$DUSTMAPS_EXT_WANG2025_URL`` or
    the GitHub release, :data:`WANG2025_URL`), falling back to the NADC mirror
    (:data:`WANG2025_MIRROR_URL`) when that fails. It must be an intact gzip (full CRC check)
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
    directory.mkdir(parents=True, exist_ok=True)
    with file_lock(directory / f"{fits_path.name}.fetch"):
        if clobber:
            _drop_product(columns)
            fits_path.unlink(missing_ok=True)
            gz.unlink(missing_ok=True)
            gz.with_name(gz.name + ".part").unlink(missing_ok=True)
        if fits_path.exists():
            try:
                _check_wang_table(fits_path)
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
    unpacked_estimate = WANG2025_NROWS * len(WANG2025_COLUMNS) * 8
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
