"""Compact storage of per-star (distance modulus, reddening) posteriors (§4.1.2, §4.2).

The paper's grid is 120 distance-modulus cells (``mu = 4 + 0.125 i``) by 700 reddening cells
(``E = 0.01 j`` mag). A dense stack (700 M stars x 84,000 cells) is out of the question, so
each star keeps only the bounding box of its non-negligible cells: ``x0, nx`` (first column,
number of columns), ``y0, ny`` (first row, number of rows) and ``nx * ny`` float32 values at
``data[offsets[k]:]`` (row-major, distance then reddening) -- a CSR-like ragged array. A
typical mock star (:func:`.mock.mock_catalogue`: sigma_mu 0.2-0.6 mag, sigma_E 0.03-0.08 mag,
some bimodal) needs a median 26 x 46 cells (4.9 kB) as drawn and 31 x 76 cells (9.3 kB)
after the §4.1.2 smoothing cut at 1e-4 of its peak, instead of the 336 kB of a dense image.

Alongside the images: sky position (Galactic l, b in deg) and the quantities that the quality
cuts of §4.2.1 use: best chi-square and number of bands, median initial mass (Msun) and the
2.5th percentile of the distance (kpc).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numba
import numpy as np

from dustmaps_ext.formats import decaps as decaps_format

__all__ = ["DM_MIN", "DM_STEP", "N_DM", "E_STEP", "N_E", "StarPosteriors", "bin_samples",
           "boxes_from_dense"]

#: The posteriors' distance-modulus grid: the map's own (the DECaPS format's facts).
DM_MIN = decaps_format.DM_MIN
DM_STEP = decaps_format.DM_STEP
N_DM = decaps_format.N_DIST
E_STEP = 0.01
N_E = 700


#: Fields every input must hold; the others are optional (NaN, or 0 bands, when unknown).
REQUIRED_FIELDS = ("l", "b", "x0", "nx", "y0", "ny", "offsets", "data")
_FLOAT_META = ("chi2_best", "m_init_median", "dist_p2_5_kpc", "parallax_mas",
               "parallax_err_mas")


@dataclass
class StarPosteriors:
    """Per-star posteriors in bounding-box form plus the metadata of the quality cuts.

    All per-star arrays have shape (n_star,). ``data`` is float32 and ``offsets`` int64.
    The metadata is optional: ``chi2_best``, ``m_init_median``, ``dist_p2_5_kpc`` (inputs of
    the §4.2.1 cuts) and ``parallax_mas``, ``parallax_err_mas`` (the parallax-aware distance
    smoothing) default to NaN, ``n_bands`` to 0, meaning "not known": a cut or a smoothing
    rule whose inputs a star lacks is not applied to it (and the build logs how many).

    Raises
    ------
    ValueError
        On a NaN or out-of-range ``l``/``b``, a negative offset, a box outside the grid or
        past the end of ``data``, or negative or non-finite posterior values.
    """

    l: np.ndarray
    b: np.ndarray
    x0: np.ndarray
    nx: np.ndarray
    y0: np.ndarray
    ny: np.ndarray
    offsets: np.ndarray
    data: np.ndarray
    chi2_best: np.ndarray | None = None
    n_bands: np.ndarray | None = None
    m_init_median: np.ndarray | None = None
    dist_p2_5_kpc: np.ndarray | None = None
    parallax_mas: np.ndarray | None = None
    parallax_err_mas: np.ndarray | None = None

    def __post_init__(self):
        n = np.asarray(self.l).size
        for name in _FLOAT_META:
            if getattr(self, name) is None:
                setattr(self, name, np.full(n, np.nan))
        if self.n_bands is None:
            self.n_bands = np.zeros(n, np.int32)
        for f in fields(self):
            arr = np.asarray(getattr(self, f.name))
            if f.name != "data" and arr.shape != (n,):
                raise ValueError(f"{f.name} must have shape ({n},); got {arr.shape}")
        self.l = np.asarray(self.l, np.float64)
        self.b = np.asarray(self.b, np.float64)
        if not (np.all(np.isfinite(self.l)) and np.all(np.isfinite(self.b))):
            bad = np.flatnonzero(~(np.isfinite(self.l) & np.isfinite(self.b)))
            raise ValueError(f"{bad.size} stars have a NaN or infinite l or b (first: star "
                             f"{bad[0]}); remove them before the build")
        if np.any(np.abs(self.b) > 90):
            raise ValueError("b must lie in [-90, 90] deg")
        self.l = self.l % 360.0
        for name in ("x0", "nx", "y0", "ny"):
            setattr(self, name, np.asarray(getattr(self, name), np.int32))
        self.offsets = np.asarray(self.offsets, np.int64)
        self.data = np.asarray(self.data, np.float32)
        for name in _FLOAT_META:
            setattr(self, name, np.asarray(getattr(self, name), np.float64))
        self.n_bands = np.asarray(self.n_bands, np.int32)
        if n and (np.any(self.x0 < 0) or np.any(self.nx < 1) or np.any(self.x0 + self.nx > N_DM)
                  or np.any(self.y0 < 0) or np.any(self.ny < 1)
                  or np.any(self.y0 + self.ny > N_E)):
            raise ValueError("bounding boxes must be non-empty and inside the 120 x 700 grid")
        if n and np.any(self.offsets < 0):
            raise ValueError("offsets must be non-negative (a negative offset would read "
                             "another star's posterior)")
        if n and np.any(self.offsets + self.nx.astype(np.int64) * self.ny > self.data.size):
            raise ValueError("offsets point beyond the end of data")
        if self.data.size and not (np.isfinite(self.data).all() and self.data.min() >= 0):
            raise ValueError("posterior values must be finite and non-negative")

    @classmethod
    def empty(cls) -> "StarPosteriors":
        """A catalogue without stars."""
        z = np.zeros(0)
        zi = np.zeros(0, np.int32)
        return cls(z, z, zi, zi, zi, zi, np.zeros(0, np.int64), np.zeros(0, np.float32))

    @property
    def n_star(self) -> int:
        return int(self.l.size)

    def image(self, k: int) -> np.ndarray:
        """Dense (120, 700) float32 image of star ``k``."""
        out = np.zeros((N_DM, N_E), np.float32)
        box = self.data[self.offsets[k]:self.offsets[k] + int(self.nx[k]) * int(self.ny[k])]
        out[self.x0[k]:self.x0[k] + self.nx[k], self.y0[k]:self.y0[k] + self.ny[k]] = \
            box.reshape(self.nx[k], self.ny[k])
        return out

    def box(self, k: int) -> np.ndarray:
        """Bounding-box view of star ``k``, shape (nx, ny)."""
        o = self.offsets[k]
        return self.data[o:o + int(self.nx[k]) * int(self.ny[k])].reshape(self.nx[k], self.ny[k])

    def subset(self, index) -> "StarPosteriors":
        """A new StarPosteriors holding the stars ``index`` (boxes copied, compacted)."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        sizes = self.nx[index].astype(np.int64) * self.ny[index]
        new_off = (np.cumsum(sizes) - sizes).astype(np.int64)
        new_data = _gather_boxes(self.offsets[index], sizes, new_off, self.data,
                                 int(sizes.sum()))
        return self.replace_boxes(self.x0[index], self.nx[index], self.y0[index],
                                  self.ny[index], new_off, new_data, index=index)

    def replace_boxes(self, x0, nx, y0, ny, offsets, data, *, index=None) -> "StarPosteriors":
        """A new StarPosteriors with these boxes and the metadata of stars ``index`` (all)."""
        index = slice(None) if index is None else index
        meta = {f.name: getattr(self, f.name)[index] for f in fields(self)
                if f.name not in REQUIRED_FIELDS}
        return StarPosteriors(self.l[index], self.b[index], x0, nx, y0, ny, offsets, data,
                              **meta)

    def save(self, path) -> Path:
        """Write to an uncompressed ``.npz`` file."""
        path = Path(path)
        np.savez(path, **{f.name: getattr(self, f.name) for f in fields(self)})
        return path

    @classmethod
    def load(cls, path) -> "StarPosteriors":
        """Read a file written by :meth:`save` (optional fields may be absent)."""
        with np.load(path, allow_pickle=False) as f:
            return cls(**{fl.name: f[fl.name] for fl in fields(cls) if fl.name in f.files})

    @classmethod
    def concatenate(cls, parts) -> "StarPosteriors":
        """Join several StarPosteriors."""
        parts = list(parts)
        shift = np.cumsum([0] + [p.data.size for p in parts[:-1]])
        kw = {}
        for f in fields(cls):
            if f.name == "offsets":
                kw[f.name] = np.concatenate([p.offsets + s for p, s in zip(parts, shift)])
            else:
                kw[f.name] = np.concatenate([getattr(p, f.name) for p in parts])
        return cls(**kw)


@numba.njit(cache=True, nogil=True)
def _gather_boxes(src_off, sizes, dst_off, data, total):
    out = np.empty(total, np.float32)
    for i in range(sizes.size):
        s = src_off[i]
        d = dst_off[i]
        for j in range(sizes[i]):
            out[d + j] = data[s + j]
    return out


def boxes_from_dense(images, threshold: float = 1e-4):
    """Bounding boxes of dense images of shape (n_star, 120, 700).

    Cells below ``threshold`` times a star's maximum are dropped; the box is the smallest
    rectangle holding the rest. Returns ``(x0, nx, y0, ny, offsets, data)``.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 3 or images.shape[1:] != (N_DM, N_E):
        raise ValueError(f"images must have shape (n_star, {N_DM}, {N_E})")
    n = images.shape[0]
    x0 = np.zeros(n, np.int32)
    nx = np.ones(n, np.int32)
    y0 = np.zeros(n, np.int32)
    ny = np.ones(n, np.int32)
    chunks = []
    for k in range(n):
        peak = images[k].max()
        keep = images[k] > threshold * peak if peak > 0 else np.zeros_like(images[k], bool)
        xs = np.flatnonzero(keep.any(axis=1))
        ys = np.flatnonzero(keep.any(axis=0))
        if xs.size:
            x0[k], nx[k] = xs[0], xs[-1] - xs[0] + 1
            y0[k], ny[k] = ys[0], ys[-1] - ys[0] + 1
        box = images[k, x0[k]:x0[k] + nx[k], y0[k]:y0[k] + ny[k]]
        chunks.append(np.where(box > threshold * peak, box, 0).ravel())
    sizes = nx.astype(np.int64) * ny
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    return x0, nx, y0, ny, offsets, np.concatenate(chunks).astype(np.float32)


def bin_samples(mu_samples, ebv_samples):
    """Bin posterior samples of each star onto the (120, 700) grid.

    Parameters
    ----------
    mu_samples, ebv_samples : array_like, shape (n_star, n_samples)
        Distance-modulus and E(B-V) samples; samples off the grid are dropped (a star with
        none on the grid gets an all-zero image, which the filters remove).

    Returns
    -------
    numpy.ndarray, shape (n_star, 120, 700), float32
        Normalised histograms (each sums to the fraction of samples on the grid).
    """
    mu = np.asarray(mu_samples, np.float64)
    e = np.asarray(ebv_samples, np.float64)
    if mu.shape != e.shape or mu.ndim != 2:
        raise ValueError("mu_samples and ebv_samples must share a shape (n_star, n_samples)")
    ix = np.floor((mu - (DM_MIN - 0.5 * DM_STEP)) / DM_STEP).astype(np.int64)
    iy = np.floor(e / E_STEP + 0.5).astype(np.int64)
    ok = (ix >= 0) & (ix < N_DM) & (iy >= 0) & (iy < N_E) & np.isfinite(mu) & np.isfinite(e)
    out = np.zeros((mu.shape[0], N_DM, N_E), np.float32)
    star = np.broadcast_to(np.arange(mu.shape[0])[:, None], mu.shape)
    np.add.at(out, (star[ok], ix[ok], iy[ok]), 1.0)
    out /= mu.shape[1]
    return out
