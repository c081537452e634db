"""Bayestar19 + DECaPS: one query for E(B-V) over the whole Galactic disk.

The DECaPS map (Zucker et al. 2025) covers the southern plane (239 < l or l < 6 deg,
|b| < 10 deg), which Bayestar19 (Green et al. 2019; dec > -30 deg) cannot see; together
they cover the whole disk |b| < 10 deg (Zucker et al. 2025, §6.2.2 and Figure 12).
:class:`BayestarDECaPSQuery` chooses a source per coordinate and nothing more: every value
it returns is the value of one map queried directly, converted to E(B-V).

Coverage rule
    DECaPS where it has a pixel, Bayestar19 elsewhere (``prefer='decaps'``, the default).
    Where both have a pixel, ``prefer='bayestar'`` takes Bayestar19, and
    ``prefer='reliable'`` takes, for each coordinate and distance, the map whose reliable
    distance-modulus range contains the distance (DECaPS when both or neither do).
    Without distances ``'reliable'`` decides per distance bin: bin ``k`` of a profile
    comes from DECaPS if ``DM_bin_edges[k]`` lies in DECaPS' reliable range, else from
    Bayestar19 if it lies in Bayestar19's, else from DECaPS. Outside both maps: NaN.

Units
    DECaPS is E(B-V) in mag. Bayestar19 values are multiplied by ``bayestar_to_ebv``:
    0.884 (default; E(B-V) from E(g-r) on the SFD scale) or 0.996 (from E(r-z)), the two
    conversions of the Bayestar19 usage notes, in the precision of Bayestar19's answer
    (float32 values times ``float32(bayestar_to_ebv)``; float64 percentiles times the
    factor). Answers are float32.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import numbers
from pathlib import Path

import astropy.units as u
import numpy as np
from dustmaps.map_base import DustMap

from ._coords import galactic_arrays, restore_shape
from ._pickle import ReopenByPath
from ._core.modes import as_generator, check_mode, parse_pct
from ._core.pixels import PixelIndex, lb_to_nested, nested_to_lb, stable_order
from ._core.los import place_scaled
from ._core.voxel import distance_modulus, flag_fields, query_voxels

__all__ = ["BayestarDECaPSQuery", "COMBINED_MODES", "SOURCE_NAMES", "SOURCE_NONE",
           "SOURCE_DECAPS", "SOURCE_BAYESTAR", "SOURCE_MIXED", "PREFER_CHOICES"]

logger = logging.getLogger(__name__)

#: Modes of the combined map.
COMBINED_MODES = ("mean", "median", "samples", "random_sample", "percentile")
#: Overlap rules.
PREFER_CHOICES = ("decaps", "bayestar", "reliable")

#: Codes of the flags' ``bin_source`` field; ``SOURCE_NAMES[code]`` is the name used in
#: the flags' ``source`` field.
SOURCE_NONE, SOURCE_DECAPS, SOURCE_BAYESTAR, SOURCE_MIXED = 0, 1, 2, 3
SOURCE_NAMES = ("none", "decaps", "bayestar", "mixed")
_SOURCE_ARRAY = np.array(SOURCE_NAMES, dtype="U8")


class _StoreSource:
    """A map held by one of this package's query classes, answered by the voxel core."""

    def __init__(self, name: str, store, valid_modes, mode_map: dict, scale: float) -> None:
        self.name = name
        self.store = store
        self.index: PixelIndex = store.pixels.index
        self.valid_modes = tuple(valid_modes)
        self.mode_map = mode_map
        self.scale = scale
        self.n_samples = store.n_samples if "samples" in self.valid_modes else 0
        self.edges = np.asarray(store.info.dm_bin_edges, dtype=np.float32)

    def reliable_range(self, rows: np.ndarray):
        pix = self.store.pixels.flags(rows)
        return pix["dm_min"], pix["dm_max"]

    def answer(self, d_kpc, rows, mode, pct, rng, return_flags):
        """Values at ``rows`` (and distances), and a dict of flag fields or None."""
        vals = query_voxels(self.store, None, None, d_kpc, mode=self.mode_map.get(mode, mode),
                            valid_modes=self.valid_modes, pct=pct, rng=rng, rows=rows)
        if not return_flags:
            return vals, None
        # the pixel flags in one gather over the (pixel-ordered) rows
        dm = None if d_kpc is None else distance_modulus(d_kpc)
        return vals, flag_fields(self.store.pixels.flags(rows), dm)


class _DustmapsBayestarSource:
    """dustmaps' own ``BayestarQuery``, asked through its public ``query``."""

    def __init__(self, query, mode_map: dict, scale: float) -> None:
        info = query._pixel_info  # dustmaps 1.0.14 keeps it in RAM (NaN ranges -> +-inf)
        self.name = "bayestar"
        self.query = query
        self.index = PixelIndex(np.asarray(info["healpix_index"]).astype(np.int64),
                                np.asarray(info["nside"]).astype(np.int64), sort=True)
        self._dm_min = np.asarray(info["DM_reliable_min"], dtype=np.float32)
        self._dm_max = np.asarray(info["DM_reliable_max"], dtype=np.float32)
        self.valid_modes = ("random_sample", "random_sample_per_pix", "samples", "median",
                            "mean", "best", "percentile")
        self.mode_map = mode_map
        self.scale = scale
        self.n_samples = int(query._n_samples)
        self.edges = np.asarray(query._DM_bin_edges, dtype=np.float32)
        # the centre of each row's pixel: asking dustmaps there reads exactly that row
        self._l_deg = np.empty(info.size)
        self._b_deg = np.empty(info.size)
        for nside in np.unique(info["nside"]):
            sel = info["nside"] == nside
            self._l_deg[sel], self._b_deg[sel] = nested_to_lb(int(nside), info["healpix_index"][sel])

    def reliable_range(self, rows: np.ndarray):
        inside = rows >= 0
        safe = np.where(inside, rows, 0)
        return (np.where(inside, self._dm_min[safe], np.float32(np.nan)),
                np.where(inside, self._dm_max[safe], np.float32(np.nan)))

    def answer(self, d_kpc, rows, mode, pct, rng, return_flags):
        from astropy.coordinates import SkyCoord

        l_deg, b_deg = self._l_deg[rows], self._b_deg[rows]
        if d_kpc is None:
            coords = SkyCoord(l_deg * u.deg, b_deg * u.deg, frame="galactic")
        else:
            coords = SkyCoord(l_deg * u.deg, b_deg * u.deg, distance=d_kpc * u.kpc,
                              frame="galactic")
        # no prints; d = 0 (log10 of 0 in dustmaps) is not an error here: it gives 0
        with contextlib.redirect_stdout(io.StringIO()), np.errstate(divide="ignore", invalid="ignore"):
            out = self.query.query(coords, mode=self.mode_map.get(mode, mode), pct=pct,
                                   return_flags=return_flags)
        values, flags = out if return_flags else (out, None)
        if d_kpc is not None:  # this package's rule: NaN distance -> NaN (dustmaps: last bin)
            values[np.isnan(d_kpc)] = np.nan
        fields = None if flags is None else {name: flags[name] for name in flags.dtype.names}
        return values, fields


def _is_decaps_query(obj) -> bool:
    from .decaps import DECaPSQuery, DECaPSQueryLite

    return isinstance(obj, (DECaPSQuery, DECaPSQueryLite))


def _open_decaps(decaps, progress: bool):
    from ._io.decaps import default_map_path, inspect_decaps_file
    from .decaps import DECaPSQuery, DECaPSQueryLite

    if decaps is None:
        decaps = default_map_path()
    if isinstance(decaps, (str, Path)):
        if inspect_decaps_file(decaps).layout == "pixel-major":
            return DECaPSQueryLite(decaps)
        return DECaPSQuery(decaps, progress=progress)
    if _is_decaps_query(decaps):
        return decaps
    raise TypeError("decaps must be a file name, a DECaPSQuery or a DECaPSQueryLite; "
                    f"got {type(decaps).__name__}")


def _bayestar_source(bayestar, mode_map: dict, scale: float, progress: bool):
    from dustmaps.bayestar import BayestarQuery

    from .bayestar import Bayestar19Query

    if bayestar is None or isinstance(bayestar, (str, Path)):
        bayestar = Bayestar19Query(bayestar, progress=progress)
    if isinstance(bayestar, Bayestar19Query):
        source = _StoreSource("bayestar", bayestar.store, bayestar.valid_modes, mode_map, scale)
    elif isinstance(bayestar, BayestarQuery):
        source = _DustmapsBayestarSource(bayestar, mode_map, scale)
    else:
        raise TypeError("bayestar must be a file name, a dustmaps_ext.bayestar.Bayestar19Query or a "
                        f"dustmaps.bayestar.BayestarQuery; got {type(bayestar).__name__}")
    source.query_object = bayestar  # what the combined map pickles (by path for ours)
    return source


def _flag_dtype(has_dist: bool, per_bin: bool, n_dist: int) -> np.dtype:
    fields = [("source", "U8"), ("converged", bool), ("infilled", bool)]
    if has_dist:
        fields.append(("reliable_dist", bool))
    else:
        fields += [("min_reliable_distmod", np.float32), ("max_reliable_distmod", np.float32)]
        if per_bin:
            fields.append(("bin_source", np.uint8, (n_dist,)))
    return np.dtype(fields)


class BayestarDECaPSQuery(ReopenByPath, DustMap):
    """DECaPS and Bayestar19 as one map of E(B-V) over the whole Galactic disk.

    Parameters
    ----------
    decaps : str, Path, DECaPSQuery or DECaPSQueryLite, optional
        The DECaPS map: a file (a repacked file opens as
        :class:`~dustmaps_ext.decaps.DECaPSQueryLite`, memory-mapped; a published one as
        :class:`~dustmaps_ext.decaps.DECaPSQuery`, in RAM) or a query object. Default:
        :func:`dustmaps_ext.decaps.default_map_path`.
    bayestar : str, Path, Bayestar19Query or dustmaps.bayestar.BayestarQuery, optional
        The Bayestar19 map: a file (opened with
        :class:`~dustmaps_ext.bayestar.Bayestar19Query`) or a query object. Default:
        ``<dustmaps data_dir>/bayestar/bayestar2019.h5``.
    bayestar_to_ebv : float
        E(B-V) per Bayestar19 unit: 0.884 (default, E(g-r) on the SFD scale) or 0.996
        (E(r-z)), from the Bayestar19 usage notes.
    prefer : {'decaps', 'bayestar', 'reliable'}
        The rule where both maps have a pixel (see the module).
    bayestar_mean : {'mean', 'best'}, keyword-only
        What ``mode='mean'`` reads from Bayestar19: the mean over its samples of the
        interpolated values (default, as DECaPS' mean is a mean over samples) or its
        best fit.
    progress : bool, keyword-only
        Progress bars while maps load into RAM.

    Notes
    -----
    How modes map onto each source: ``mean`` is DECaPS' stored mean map and Bayestar19's
    ``mean`` (or ``best``, with ``bayestar_mean='best'``); ``median``, ``percentile`` and
    ``random_sample`` reduce or draw among all samples of the answering map; ``samples``
    returns the first ``n_samples = min(DECaPS samples, Bayestar19 samples)`` samples of
    the answering map. A mean-only DECaPS map allows ``mode='mean'`` only. With a
    dustmaps ``BayestarQuery`` as source, its random modes use numpy's global random
    state (it takes no ``rng``).
    """

    def __init__(self, decaps=None, bayestar=None, bayestar_to_ebv: float = 0.884,
                 prefer: str = "decaps", *, bayestar_mean: str = "mean",
                 progress: bool = True) -> None:
        super().__init__()
        if prefer not in PREFER_CHOICES:
            raise ValueError(f"prefer must be one of {PREFER_CHOICES}; got {prefer!r}")
        if bayestar_mean not in ("mean", "best"):
            raise ValueError(f"bayestar_mean must be 'mean' or 'best'; got {bayestar_mean!r}")
        if isinstance(bayestar_to_ebv, bool) or not isinstance(bayestar_to_ebv, numbers.Real):
            raise TypeError(f"bayestar_to_ebv must be a number; got {bayestar_to_ebv!r}")
        scale = float(bayestar_to_ebv)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"bayestar_to_ebv must be a positive finite number; got {bayestar_to_ebv!r}")
        self.prefer = prefer
        self.bayestar_to_ebv = scale
        self._decaps_query = _open_decaps(decaps, progress)
        self._decaps = _StoreSource("decaps", self._decaps_query.store,
                                    self._decaps_query.valid_modes, {}, 1.0)
        self._bayestar = _bayestar_source(bayestar, {"mean": bayestar_mean}, scale, progress)
        if not np.array_equal(self._decaps.edges, self._bayestar.edges):
            raise ValueError("the DECaPS and Bayestar19 files have different distance-modulus "
                             "edges (DM_bin_edges); the combined map needs the same edges")
        self._edges = self._decaps.edges
        self._nside_fine = max(self._decaps.index.nside_max, self._bayestar.index.nside_max)
        self.valid_modes = tuple(m for m in COMBINED_MODES if m in self._decaps.valid_modes)
        self.n_samples = (min(self._decaps.n_samples, self._bayestar.n_samples)
                          if "samples" in self.valid_modes else 0)
        # pickles as the two query objects (each by path) and the options
        self._remember_init(decaps=self._decaps_query, bayestar=self._bayestar.query_object,
                            bayestar_to_ebv=scale, prefer=prefer, bayestar_mean=bayestar_mean,
                            progress=progress)

    # ------------------------------------------------------------------ coverage
    def _rows(self, source, pix_fine: np.ndarray) -> np.ndarray:
        shift = 2 * int(math.log2(self._nside_fine // source.index.nside_max))
        return source.index.rows_of_pixels(pix_fine >> shift if shift else pix_fine)

    def _plan(self, l_deg, b_deg, dm):
        """Which coordinates each map answers, and their rows in it.

        Returns ``{source name: (indices, rows)}`` and, for ``prefer='reliable'``, the
        coordinate indices whose pixel both maps have, with their rows in each map (else
        None). Coordinates are taken in pixel order, so that the row searches and each
        map's reads walk through the tables instead of jumping around them. A coordinate
        without a valid position has pixel -1, which stays negative at every nside: no
        row in either map.
        """
        pix = lb_to_nested(self._nside_fine, l_deg, b_deg)
        order = stable_order(pix)
        pix = pix[order]
        if self.prefer == "reliable":
            rows_d, rows_b = self._rows(self._decaps, pix), self._rows(self._bayestar, pix)
            use_b = (rows_b >= 0) & (rows_d < 0)
            both = np.flatnonzero((rows_d >= 0) & (rows_b >= 0))
            if dm is not None and both.size:
                dm_both = dm[order[both]]
                rel_d = _contains(self._decaps.reliable_range(rows_d[both]), dm_both)
                rel_b = _contains(self._bayestar.reliable_range(rows_b[both]), dm_both)
                use_b[both[~rel_d & rel_b]] = True
            pos_d = np.flatnonzero((rows_d >= 0) & ~use_b)
            pos_b = np.flatnonzero(use_b)
            plan = {"decaps": (order[pos_d], rows_d[pos_d]),
                    "bayestar": (order[pos_b], rows_b[pos_b])}
            return plan, (order[both], rows_d[both], rows_b[both])
        first, second = ((self._bayestar, self._decaps) if self.prefer == "bayestar"
                         else (self._decaps, self._bayestar))
        rows_1 = self._rows(first, pix)
        hit_1 = rows_1 >= 0
        pos_1 = np.flatnonzero(hit_1)
        miss = np.flatnonzero(~hit_1)
        rows_2 = self._rows(second, pix[miss])
        hit_2 = rows_2 >= 0
        plan = {first.name: (order[pos_1], rows_1[pos_1]),
                second.name: (order[miss[hit_2]], rows_2[hit_2])}
        return plan, None

    # ------------------------------------------------------------------ query
    def query(self, coords, mode: str = "mean", return_flags: bool = False, pct=None, *, rng=None):
        """E(B-V) (mag) from DECaPS or Bayestar19, whichever covers each coordinate.

        Parameters
        ----------
        coords : astropy.coordinates.SkyCoord
            Any frame and shape (scalar too), with or without distances.
        mode : str
            ``'mean'`` (default), ``'median'``, ``'samples'``, ``'random_sample'`` or
            ``'percentile'`` (see the class notes for what each reads from each map).
        return_flags : bool
            Also return a structured array, per coordinate: ``source`` (``'decaps'``,
            ``'bayestar'``, ``'none'``, or ``'mixed'`` for a profile whose bins come from
            both maps), then the flags of the answering map with dustmaps' names:
            ``converged``, ``infilled`` (always False for Bayestar19) and, with distances,
            ``reliable_dist``; without distances ``min_reliable_distmod`` and
            ``max_reliable_distmod`` (a NaN range of Bayestar19 reads +inf / -inf, as in
            dustmaps). With ``prefer='reliable'`` and no distances, ``bin_source``
            (uint8, one per distance bin: 0 none, 1 DECaPS, 2 Bayestar19) says where each
            bin came from, and a ``'mixed'`` coordinate carries DECaPS' flags.
        pct : float or sequence of float
            Percentile(s) in [0, 100] for ``mode='percentile'``.
        rng : None, int or numpy.random.Generator, keyword-only
            Randomness of ``'random_sample'``.

        Returns
        -------
        numpy.ndarray (float32), or (numpy.ndarray, numpy.ndarray)
            Shapes as the DECaPS classes: with distances ``coords.shape`` (plus
            ``(n_samples,)`` for ``'samples'``, ``(n_pct,)`` for a list ``pct``); without
            distances ``coords.shape + (120,)`` (``'samples'``:
            ``coords.shape + (n_samples, 120)``; a list ``pct`` adds a last axis). NaN
            outside both maps, for invalid positions and for NaN distances.

        Raises
        ------
        ValueError
            For an unknown mode or an invalid ``pct``.
        TypeError
            If ``coords`` is not a SkyCoord.
        """
        check_mode(mode, self.valid_modes)
        _, scalar_pct = parse_pct(mode, pct)
        flat = galactic_arrays(coords)
        d_kpc = flat.d_kpc
        has_dist = d_kpc is not None
        dm = distance_modulus(d_kpc) if (has_dist and self.prefer == "reliable") else None
        plan, full_rows = self._plan(flat.l_deg, flat.b_deg, dm)
        per_bin = self.prefer == "reliable" and not has_dist
        gen = as_generator(rng) if mode == "random_sample" else None

        n, n_dist = flat.l_deg.size, self._edges.size
        tail = ()
        if mode == "samples":
            tail = (self.n_samples,)
        if not has_dist:
            tail = tail + (n_dist,)
        if mode == "percentile" and not scalar_pct:
            tail = tail + (np.size(pct),)
        values = np.empty((n,) + tail, dtype=np.float32)
        unanswered = np.ones(n, dtype=bool)
        for idx, _ in plan.values():
            unanswered[idx] = False
        values[unanswered] = np.nan
        flags = None
        if return_flags:
            flags = np.zeros(n, dtype=_flag_dtype(has_dist, per_bin, n_dist))
            code = np.zeros(n, dtype=np.uint8)  # SOURCE_NONE
            code[plan["decaps"][0]] = SOURCE_DECAPS
            code[plan["bayestar"][0]] = SOURCE_BAYESTAR
            flags["source"] = _SOURCE_ARRAY[code]
            if not has_dist:
                flags["min_reliable_distmod"] = np.nan
                flags["max_reliable_distmod"] = np.nan

        for source in (self._decaps, self._bayestar):
            idx, rows = plan[source.name]
            if idx.size:
                self._fill(source, idx, rows, d_kpc, mode, pct, gen, values, flags)
        if per_bin:
            self._fill_per_bin(*full_rows, mode, pct, gen, values, flags)
        result = (values, flags) if return_flags else values
        return restore_shape(result, flat)

    def _answer(self, source, idx, rows, d_kpc, mode, pct, gen, want_flags):
        d_sub = None if d_kpc is None else d_kpc[idx]
        vals, fl = source.answer(d_sub, rows, mode, pct, gen, want_flags)
        if mode == "samples" and vals.shape[1] != self.n_samples:
            vals = vals[:, :self.n_samples]
        return vals, fl

    def _fill(self, source, idx, rows, d_kpc, mode, pct, gen, values, flags):
        vals, fl = self._answer(source, idx, rows, d_kpc, mode, pct, gen, flags is not None)
        # unit conversion in the answer's own precision (float32 x float32(factor), or
        # float64 x factor for percentiles), written straight into place
        place_scaled(values, idx, vals, source.scale)
        if flags is not None:
            for name, field in fl.items():
                flags[name][idx] = field
            if "bin_source" in flags.dtype.names:
                flags["bin_source"][idx] = _code_of(source)

    def _fill_per_bin(self, both, rows_d, rows_b, mode, pct, gen, values, flags):
        """prefer='reliable' without distances: overlap profiles, bin by bin.

        ``both`` are the coordinates whose pixel both maps have; ``rows_d`` and ``rows_b``
        their rows in DECaPS and Bayestar19.
        """
        if not both.size:
            return
        rel_d = _contains_edges(self._decaps.reliable_range(rows_d), self._edges)
        rel_b = _contains_edges(self._bayestar.reliable_range(rows_b), self._edges)
        use_b = ~rel_d & rel_b  # (m, n_dist)
        take = np.flatnonzero(use_b.any(axis=1))
        if not take.size:
            return
        sub = both[take]
        use_b = use_b[take]
        vals, fl = self._answer(self._bayestar, sub, rows_b[take], None, mode, pct, gen,
                                flags is not None)
        vals *= vals.dtype.type(self._bayestar.scale)  # the rule place_scaled applies in _fill
        mask = use_b
        if mode == "samples":
            mask = use_b[:, None, :]
        elif vals.ndim == 3:  # list of percentiles: (m, n_dist, n_pct)
            mask = use_b[:, :, None]
        values[sub] = np.where(mask, vals, values[sub])
        if flags is not None:
            all_b = use_b.all(axis=1)
            new_code = np.where(all_b, SOURCE_BAYESTAR, SOURCE_MIXED).astype(np.uint8)
            flags["source"][sub] = _SOURCE_ARRAY[new_code]
            flags["bin_source"][sub] = np.where(use_b, SOURCE_BAYESTAR, SOURCE_DECAPS)
            whole = sub[all_b]  # every bin from Bayestar19: its flags
            for name, field in fl.items():
                flags[name][whole] = field[all_b]
            flags["infilled"][whole] = False

    # ------------------------------------------------------------------ grid
    @property
    def distmods(self) -> u.Quantity:
        """Distance-modulus edges shared by both maps (mag)."""
        return self._edges * u.mag

    @property
    def distances(self) -> u.Quantity:
        """Distances (kpc) of the distance-modulus edges."""
        return 10.0 ** (0.2 * self._edges - 2.0) * u.kpc


def _code_of(source) -> int:
    """The ``bin_source`` code of a source object."""
    return SOURCE_DECAPS if source.name == "decaps" else SOURCE_BAYESTAR


def _contains(rng_pair, dm: np.ndarray) -> np.ndarray:
    lo, hi = rng_pair
    return (dm >= lo) & (dm <= hi) & np.isfinite(lo) & np.isfinite(hi)


def _contains_edges(rng_pair, edges: np.ndarray) -> np.ndarray:
    lo, hi = rng_pair
    lo, hi = lo[:, None], hi[:, None]
    return (edges[None, :] >= lo) & (edges[None, :] <= hi) & np.isfinite(lo) & np.isfinite(hi)
