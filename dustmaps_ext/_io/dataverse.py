"""Find a released file in a Dataverse dataset by DOI: its id, size, checksum and access URL.

Dataverse answers ``GET {base}/api/datasets/:persistentId?persistentId=doi:{doi}`` with JSON
whose ``data.latestVersion.files[*].dataFile`` entries carry ``id``, ``filename``,
``filesize``, ``contentType`` and the checksum (``md5``, or ``checksum: {type, value}`` on
installations that use another algorithm). The bytes are at ``{base}/api/access/datafile/{id}``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import requests

from ..errors import DataverseError, DownloadError
from .download import RetryPolicy, get_json

__all__ = [
    "DATAVERSE_URL_ENV",
    "DEFAULT_DATAVERSE_URL",
    "DataverseError",
    "DataverseFile",
    "dataset_files",
    "find_file",
    "resolve_base_url",
]

#: The Harvard Dataverse, where the DECaPS and Bayestar19 releases live.
DEFAULT_DATAVERSE_URL = "https://dataverse.harvard.edu"

#: Environment variable that replaces :data:`DEFAULT_DATAVERSE_URL` (mirrors, tests).
DATAVERSE_URL_ENV = "DUSTMAPS_EXT_DATAVERSE_URL"

# Dataverse checksum type names -> hashlib names.
_HASH_NAMES = {"MD5": "md5", "SHA-1": "sha1", "SHA-256": "sha256", "SHA-512": "sha512"}


@dataclass(frozen=True)
class DataverseFile:
    """One file of a Dataverse dataset, as its metadata describes it."""

    base_url: str
    doi: str
    id: int
    filename: str
    size: int | None
    hash_name: str | None
    checksum: str | None
    content_type: str | None

    @property
    def access_url(self) -> str:
        """URL of the file's bytes (the Dataverse data-access API)."""
        return f"{self.base_url}/api/access/datafile/{self.id}"


def resolve_base_url(base_url: str | None = None) -> str:
    """The Dataverse base URL: ``base_url``, else ``$DUSTMAPS_EXT_DATAVERSE_URL``, else Harvard's."""
    url = base_url or os.environ.get(DATAVERSE_URL_ENV) or DEFAULT_DATAVERSE_URL
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"Dataverse base URL must start with http:// or https://; got {url!r}")
    return url.rstrip("/")


def _normalise_doi(doi: str) -> str:
    doi = doi.strip()
    for prefix in ("doi:", "https://doi.org/", "http://doi.org/"):
        if doi.lower().startswith(prefix):
            doi = doi[len(prefix):]
    if not doi.startswith("10."):
        raise ValueError(f"not a DOI: {doi!r} (expected something like '10.7910/DVN/J9JCKO')")
    return doi


def _parse_file(base: str, doi: str, entry: Any) -> DataverseFile | None:
    data = entry.get("dataFile") if isinstance(entry, dict) else None
    if not isinstance(data, dict) or "id" not in data or "filename" not in data:
        return None
    hash_name, checksum = None, None
    if data.get("md5"):
        hash_name, checksum = "md5", str(data["md5"])
    elif isinstance(data.get("checksum"), dict):
        kind = str(data["checksum"].get("type", "")).upper()
        if kind in _HASH_NAMES and data["checksum"].get("value"):
            hash_name, checksum = _HASH_NAMES[kind], str(data["checksum"]["value"])
    size = data.get("filesize")
    return DataverseFile(base_url=base, doi=doi, id=int(data["id"]), filename=str(data["filename"]),
                         size=None if size is None else int(size), hash_name=hash_name,
                         checksum=checksum, content_type=data.get("contentType"))


def dataset_files(doi: str, base_url: str | None = None, *, retry: RetryPolicy | None = None,
                  session: requests.Session | None = None) -> list[DataverseFile]:
    """Every file of the latest version of the dataset ``doi``.

    Parameters
    ----------
    doi : str
        Dataset DOI, with or without a ``doi:`` prefix.
    base_url : str, optional
        Dataverse installation (see :func:`resolve_base_url`).
    retry : RetryPolicy, optional
        Retry settings for the metadata request.
    session : requests.Session, optional
        Session to use.

    Raises
    ------
    DataverseError
        If the answer does not describe a dataset.
    DownloadError
        If the installation cannot be reached or answers with an error (e.g. unknown DOI).
    """
    base = resolve_base_url(base_url)
    doi = _normalise_doi(doi)
    url = f"{base}/api/datasets/:persistentId"
    try:
        doc = get_json(url, params={"persistentId": f"doi:{doi}"}, retry=retry, session=session)
    except DownloadError as exc:
        raise DownloadError(f"could not read the metadata of dataset doi:{doi} from {base}: "
                            f"{exc}") from exc
    try:
        entries = doc["data"]["latestVersion"]["files"]
    except (KeyError, TypeError):
        raise DataverseError(f"{base} answered for doi:{doi} without data.latestVersion.files; "
                             "is this a Dataverse installation?") from None
    return [f for f in (_parse_file(base, doi, e) for e in entries) if f is not None]


def find_file(doi: str, filename: str, base_url: str | None = None, *,
              retry: RetryPolicy | None = None,
              session: requests.Session | None = None) -> DataverseFile:
    """The file called ``filename`` in dataset ``doi`` (latest version).

    Raises
    ------
    DataverseError
        If the dataset has no such file; the message lists the files it has.
    """
    files = dataset_files(doi, base_url, retry=retry, session=session)
    for f in files:
        if f.filename == filename:
            return f
    names = ", ".join(sorted(f.filename for f in files)) or "none"
    raise DataverseError(f"dataset doi:{_normalise_doi(doi)} at {resolve_base_url(base_url)} has "
                         f"no file named {filename!r}; its files are: {names}")
