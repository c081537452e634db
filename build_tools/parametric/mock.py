"""Mock star catalogs drawn from the simulated galaxy, with realistic measurement errors.

Stars come from :func:`dustmaps_ext_build.galaxy.draw_observed_stars` (true positions and
reddening plus Gaia-like distance errors and LAMOST/XP-like E(B-V) errors), and are turned
into a :class:`~dustmaps_ext_build.parametric.catalog.StarCatalog` that the build reads like a
real one.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..galaxy import SimulatedGalaxy, draw_observed_stars
from .catalog import StarCatalog

__all__ = ["mock_catalog", "cloud_ladder_galaxy", "ladder_patches", "catalog_at_density",
           "with_table3_disk", "PAPER_STARS_PER_DEG2", "TABLE3_DIFFUSE_DENSITY"]


def mock_catalog(galaxy: SimulatedGalaxy, n: int, seed: int | np.random.SeedSequence, *,
                 l_range_deg=(0.0, 360.0), b_range_deg=(-90.0, 90.0),
                 d_range_kpc=(0.05, 8.0), return_truth: bool = False, **error_kwargs):
    """A star catalog drawn in ``galaxy``, ready for the parametric build.

    Parameters
    ----------
    galaxy : SimulatedGalaxy
        The known dust distribution.
    n : int
        Number of stars drawn before the parallax quality cut (see
        :func:`~dustmaps_ext_build.galaxy.draw_observed_stars`).
    seed : int or numpy.random.SeedSequence
        Seed of the draw (the same seed gives the same catalog).
    l_range_deg, b_range_deg, d_range_kpc : tuple of float
        Sky patch and true-distance range.
    return_truth : bool
        Also return the true distances and reddening of the kept stars.
    **error_kwargs
        Passed to :func:`~dustmaps_ext_build.galaxy.draw_observed_stars` (error model settings).

    Returns
    -------
    StarCatalog, or (StarCatalog, dict) with ``d_true`` and ``ebv_true`` when
    ``return_truth``.
    """
    rng = np.random.default_rng(seed)
    stars = draw_observed_stars(galaxy, n, rng, l_range_deg=l_range_deg,
                                b_range_deg=b_range_deg, d_range_kpc=d_range_kpc,
                                **error_kwargs)
    cat = StarCatalog.from_arrays({
        "l": stars["l"], "b": stars["b"], "ebv": stars["ebv"], "ebv_err": stars["ebv_err"],
        "distance": stars["distance"], "distance_err_lo": stars["distance_err_lo"],
        "distance_err_hi": stars["distance_err_hi"]}, source="mock catalog", drop_invalid=False)
    if return_truth:
        return cat, {"d_true": stars["d"], "ebv_true": stars["ebv_true"]}
    return cat


#: Star density of the paper's catalog on the adaptive sightlines: 3,600 stars / deg^2,
#: i.e. a median of ~43-47 stars per nside-512 pixel (Wang et al. 2025, Table 2).
PAPER_STARS_PER_DEG2 = 3600.0

_MAX_ROUNDS = 32

#: Midplane density (E(B-V) mag/kpc) of the diffuse dust in the paper's model: Table 3 of
#: Wang et al. (2025) starts rho_max at 0.02 mag/kpc and bounds it by 0.04.
TABLE3_DIFFUSE_DENSITY = 0.02


def with_table3_disk(galaxy: SimulatedGalaxy,
                     density: float = TABLE3_DIFFUSE_DENSITY) -> SimulatedGalaxy:
    """The galaxy with its smooth disk at a diffuse density the paper's model can carry.

    The model of Wang et al. (2025, §3.2 and Table 3) splits the dust into a diffuse part
    of midplane density ``rho_max <= 0.04`` mag/kpc and scale height 50-500 pc, and cloud
    components that take everything else. The package's simulated galaxy has a disk of
    0.4 mag/kpc (ten times the bound), so on that sky the fitted clouds must also carry
    disk dust, and a cloud's fitted column is no longer comparable with the column of the
    cloud alone. This returns the same clouds, bubble and disk geometry (scale height
    0.1 kpc, inside Table 3's range) with the disk at ``density`` (default: Table 3's
    starting value, 0.02 mag/kpc).

    Raises
    ------
    ValueError
        ``density`` outside (0, 0.04] mag/kpc.
    """
    if not 0.0 < density <= 0.04:
        raise ValueError(f"density must be in (0, 0.04] mag/kpc (Table 3's rho_max), "
                         f"got {density!r}")
    return dataclasses.replace(galaxy, disk_density=float(density))

#: The cloud ladder: (l, b, distance kpc, column mag) of clouds from 0.3 to 4 kpc, each
#: in its own direction, two of them behind a nearer cloud (same direction).
_LADDER = (
    (20.0, 6.0, 0.3, 0.3),
    (40.0, -5.0, 0.5, 0.4),
    (60.0, 8.0, 0.8, 0.3),
    (80.0, -7.0, 1.2, 0.5),
    (100.0, 5.0, 1.8, 0.4),
    (140.0, -6.0, 2.5, 0.5),
    (160.0, 12.0, 3.2, 0.3),
    (200.0, -9.0, 4.0, 0.4),
    (100.0, 5.0, 0.6, 0.2),   # in front of the 1.8 kpc cloud
    (140.0, -6.0, 1.0, 0.25),  # in front of the 2.5 kpc cloud
)


def cloud_ladder_galaxy(*, angular_radius_deg: float = 1.5) -> SimulatedGalaxy:
    """A second simulated galaxy: the default disk with clouds from 0.3 to 4 kpc.

    Ten Gaussian clouds in eight directions at |b| = 5-12 deg (distances 0.3, 0.5, 0.6,
    0.8, 1.0, 1.2, 1.8, 2.5, 3.2 and 4 kpc, columns 0.2-0.5 mag; two directions cross two
    clouds). Each cloud's radius is ``angular_radius_deg`` seen from the Sun, so a patch
    of :func:`ladder_patches` is crossed by its cloud(s) everywhere.
    """
    from ..galaxy import Cloud, default_galaxy

    clouds = tuple(Cloud(l_deg=lon, b_deg=lat, distance_kpc=d,
                         radius_kpc=d * np.radians(angular_radius_deg), column_mag=col)
                   for lon, lat, d, col in _LADDER)
    return dataclasses.replace(default_galaxy(), clouds=clouds)


def ladder_patches(size_deg: float = 1.5) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """The sky patches (l range, b range) of :func:`cloud_ladder_galaxy`'s eight directions."""
    h = 0.5 * size_deg
    seen = []
    for lon, lat, _, _ in _LADDER:
        if (lon, lat) not in seen:
            seen.append((lon, lat))
    return [((lon - h, lon + h), (lat - h, lat + h)) for lon, lat in seen]


def catalog_at_density(galaxy: SimulatedGalaxy, patches, seed: int, *,
                       stars_per_deg2: float = PAPER_STARS_PER_DEG2, **error_kwargs):
    """Observed stars on sky patches at a given density of *kept* stars.

    Stars are drawn with :func:`mock_catalog` in rounds until every patch holds
    ``stars_per_deg2`` times its area of observed stars (after the magnitude and parallax
    cuts), then cut to exactly that number. The stars of the luminosity function are
    spread over the volume, so the density fixes the number of observed stars and the
    luminosity function their distances (see
    :func:`~dustmaps_ext_build.galaxy.draw_observed_stars`).

    Parameters
    ----------
    galaxy : SimulatedGalaxy
    patches : sequence of ((l_lo, l_hi), (b_lo, b_hi))
        Sky patches (deg).
    seed : int
    stars_per_deg2 : float
        Observed stars per square degree (default: the paper's 3,600).
    **error_kwargs
        Passed to :func:`mock_catalog`.

    Returns
    -------
    StarCatalog
    """
    from .catalog import CATALOG_COLUMNS

    seeds = np.random.SeedSequence(seed).spawn(len(patches))
    parts = []
    for (lr, br), ss in zip(patches, seeds):
        area = (np.radians(lr[1] - lr[0]) * (np.sin(np.radians(br[1])) - np.sin(np.radians(br[0])))
                * (180.0 / np.pi) ** 2)
        want = int(round(stars_per_deg2 * area))
        got = {c: [] for c in CATALOG_COLUMNS}
        n_have = n_drawn = 0
        for round_seed in ss.spawn(_MAX_ROUNDS):
            if n_have >= want:
                break
            # draw for the missing stars at the fraction kept so far (twice, at first)
            kept = n_have / n_drawn if n_have else 0.5
            n = max(int(np.ceil(1.2 * (want - n_have) / kept)), 1000)
            cat = mock_catalog(galaxy, n, round_seed,
                               l_range_deg=lr, b_range_deg=br, **error_kwargs).as_dict()
            for c in CATALOG_COLUMNS:
                got[c].append(cat[c])
            n_have += cat["l"].size
            n_drawn += n
        if n_have < want:
            raise ValueError(f"patch l={lr}, b={br}: only {n_have} of {want} stars observed "
                             f"after {_MAX_ROUNDS} rounds of drawing")
        parts.append({c: np.concatenate(v)[:want] for c, v in got.items()})
    return StarCatalog.from_arrays({c: np.concatenate([p[c] for p in parts])
                                    for c in CATALOG_COLUMNS}, source="mock catalog",
                                   drop_invalid=False)
