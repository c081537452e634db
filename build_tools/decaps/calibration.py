"""Simulation-based calibration of the line-of-sight sampler (Zucker et al. 2025 §4.2.3).

If the truth is drawn from the sampler's own prior and the data from the sampler's own
likelihood, the posterior's central 68% interval contains the truth 68% of the time and the
rank of the truth among the posterior samples is uniform (Talts et al. 2018). Any departure
measures a defect of the sampler (burn-in, thinning, tempering, the likelihood's
bookkeeping); agreement means that a coverage far from 68% on a simulated sky comes from the
sky not being what the model assumes (the truth not drawn from the prior, stars of one pixel
seeing different profiles, the weighting exponents), not from the sampler.

The generative model of one sightline, exact on the sampler's grid:

* the profile: jumps ``dy[x]`` drawn from the jump table (:func:`.prior.log_jump_prior_table`),
  ``y = cumsum(dy)`` in quanta of 0.01 mag;
* each star: a true distance cell ``x`` drawn with probability ``exp(slope * mu_x)`` among the
  cells with ``mu_x`` in ``mu_range`` (``slope = 3 ln(10) / 5``: ``p(d) ~ d^2``), its true
  reddening ``0.01 * y[x]``, a measured (mu, E) scattered by Gaussian widths (0.2-0.6 mag in
  distance modulus, 0.03-0.08 mag in E, the ranges of :func:`.mock.mock_catalogue`);
* its posterior image: that Gaussian likelihood times the same distance law, flat in E, on the
  grid (:func:`.mock.gaussian_mixture_boxes`), so that the line integral through it is the
  star's likelihood of the profile.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from . import mock, pixelize, prior, reliable
from .inputs import DM_MIN, DM_STEP, N_DM, N_E, StarPosteriors
from .sampler import SamplerSettings, pack_pixel, sample_pixel

__all__ = ["draw_profile_from_prior", "add_clouds", "simulate_sightline", "coverage_68",
           "truth_ranks", "calibrate_sampler", "gaussian_disc_weights"]

#: Distance-modulus edges of the sampler's grid.
DM_EDGES = DM_MIN + DM_STEP * np.arange(N_DM)


def draw_profile_from_prior(logp_dy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A profile (quanta, shape (n_dist,)) drawn from the jump table ``logp_dy``.

    Redrawn (at most 100 times) while the cumulative reddening would leave the grid.
    """
    logp_dy = np.asarray(logp_dy, np.float64)
    if logp_dy.ndim != 2:
        raise ValueError("logp_dy must have shape (n_dist, n_E)")
    n_dist, n_e = logp_dy.shape
    cdf = np.cumsum(np.exp(logp_dy), axis=1)
    cdf /= cdf[:, -1:]
    for _ in range(100):
        u = rng.random(n_dist)
        jumps = np.minimum((cdf < u[:, None]).sum(axis=1), n_e - 1)
        y = np.cumsum(jumps)
        if y[-1] < n_e:
            return y.astype(np.int64)
    raise ValueError("the jump table's profiles leave the reddening grid")


def add_clouds(y, n_clouds: int, rng: np.random.Generator, *, mu_range=(8.9, 10.6),
               column_range=(0.4, 0.7)) -> np.ndarray:
    """``y`` (quanta) with ``n_clouds`` clouds added: each a jump of a column uniform in
    ``column_range`` (mag) at a cell drawn uniformly with ``mu`` in ``mu_range`` (the
    defaults: the validation galaxy's four near clouds, 0.6-1.3 kpc), capped at the grid."""
    y = np.array(y, np.int64)
    cells = np.flatnonzero((DM_EDGES >= mu_range[0]) & (DM_EDGES <= mu_range[1]))
    if n_clouds and cells.size == 0:
        raise ValueError("mu_range holds no cell of the grid")
    for _ in range(n_clouds):
        x = rng.choice(cells)
        y[x:] += int(round(rng.uniform(*column_range) / 0.01))
    return np.minimum(y, N_E - 1)


def gaussian_disc_weights(n_star: int, rng: np.random.Generator,
                          truncate_fwhm: float = 2.0) -> np.ndarray:
    """Pixel weights of stars spread uniformly over the weighting disc: the Gaussian of
    :func:`.pixelize.assign_stars_to_pixels`, ``exp(-4 ln 2 (r / FWHM)^2)``, ``r`` up to
    ``truncate_fwhm`` FWHM (the sum is ~0.09 n for the default truncation)."""
    r = truncate_fwhm * np.sqrt(rng.random(n_star))
    return np.exp(-4.0 * math.log(2.0) * r ** 2)


def simulate_sightline(y_true, n_star: int, rng: np.random.Generator, *,
                       mu_range=(5.0, 13.0), sigma_mu=(0.2, 0.6), sigma_ebv=(0.03, 0.08)):
    """Stars and their posterior images on one sightline of known profile ``y_true``.

    Returns
    -------
    (tuple, dict)
        ``(x0, nx, y0, ny, offsets, data)`` bounding-box images (as
        :func:`.mock.gaussian_mixture_boxes`) and the truth: ``x`` (cell) and ``ebv`` per star.
    """
    y_true = np.asarray(y_true, np.int64)
    if y_true.shape != (N_DM,):
        raise ValueError(f"y_true must have shape ({N_DM},)")
    if n_star < 1:
        raise ValueError("n_star must be >= 1")
    mu_lo, mu_hi = (float(v) for v in mu_range)
    cells = np.flatnonzero((DM_EDGES >= mu_lo - 1e-9) & (DM_EDGES <= mu_hi + 1e-9))
    if cells.size == 0:
        raise ValueError("mu_range holds no cell of the grid")
    slope = 3.0 * math.log(10.0) / 5.0
    p = np.exp(slope * (DM_EDGES[cells] - DM_EDGES[cells].max()))
    x = rng.choice(cells, n_star, p=p / p.sum())
    ebv = 0.01 * y_true[x]
    s_mu = rng.uniform(*sigma_mu, n_star)
    s_e = rng.uniform(*sigma_ebv, n_star)
    mu_obs = DM_EDGES[x] + s_mu * rng.standard_normal(n_star)
    e_obs = ebv + s_e * rng.standard_normal(n_star)
    boxes = mock.gaussian_mixture_boxes(mu_obs, e_obs, s_mu, s_e, prior_slope=slope,
                                        mu_limits=(mu_lo, mu_hi))
    return boxes, {"x": x, "ebv": ebv}


def coverage_68(samples, truth) -> np.ndarray:
    """Whether ``truth`` lies between the 16th and 84th percentiles of ``samples``.

    ``samples`` has shape (n_samples, ...) and ``truth`` the remaining shape; the rule of the
    validation (:func:`.validate.validate_on_galaxy`): percentiles interpolated, ends included
    (to 1e-6 mag).
    """
    q16, q84 = np.percentile(np.asarray(samples, np.float64), [16, 84], axis=0)
    return (truth >= q16 - 1e-6) & (truth <= q84 + 1e-6)


def truth_ranks(samples, truth, rng: np.random.Generator) -> np.ndarray:
    """Normalised rank of ``truth`` among ``samples`` in [0, 1], ties broken at random.

    Uniform on [0, 1] when ``truth`` is a draw from the distribution the samples come from
    (for independent samples); the central 68% then holds 68% of the ranks. Values within
    1e-5 mag are ties (the samples are float32 multiples of 0.01 mag).
    """
    s = np.asarray(samples, np.float64)
    t = np.asarray(truth, np.float64)
    below = (s < t - 1e-5).sum(axis=0)
    ties = (np.abs(s - t) <= 1e-5).sum(axis=0)
    r = below + np.floor(rng.random(t.shape) * (ties + 1))
    return (r + rng.random(t.shape)) / (s.shape[0] + 1)


def calibrate_sampler(logp_dy, *, n_sims: int = 16, n_star: int = 100,
                      settings: SamplerSettings | None = None, weights=None, seed: int = 0,
                      mu_range=(5.0, 13.0), sample_fn=None, draw_truth=None,
                      sigma_mu=(0.2, 0.6), sigma_ebv=(0.03, 0.08),
                      truth_seed: int | None = None, mu_window=None) -> dict:
    """Coverage of the sampler's posterior samples when the truth is drawn from its prior.

    Parameters
    ----------
    logp_dy : numpy.ndarray, shape (n_dist, n_E)
        The jump table that both draws the truths and is the sampler's prior.
    n_sims : int
        Simulated sightlines (a profile and its stars each).
    n_star : int
        Stars per sightline.
    settings : SamplerSettings, optional
        The sampler's settings (default: the paper's base setting).
    weights : callable, optional
        ``weights(n_star, rng)`` gives the exponents of the stars' likelihoods (default 1,
        the model the truth is drawn from).
    mu_range : (float, float)
        Distance moduli of the stars.
    sample_fn : callable, optional
        ``sample_fn(packed, logp_dy, settings, seed)`` returning samples of shape
        (n_samples, n_dist) in mag (default :func:`.sampler.sample_pixel` without retries):
        a baseline to judge the sampler against.
    draw_truth : callable, optional
        ``draw_truth(rng)`` gives a true profile (quanta, shape (n_dist,)) instead of a
        draw from ``logp_dy``: the coverage when the sky is not what the sampler's prior
        expects (e.g. a draw from another table, or with a cloud added).
    sigma_mu, sigma_ebv : (float, float)
        Ranges of the stars' distance-modulus and reddening uncertainties (mag), as
        :func:`simulate_sightline`.
    truth_seed : int, optional
        Draw the true profiles from their own random stream of this seed, so that runs with
        different stars (their number, quality or weights) see the same truths (default:
        one stream, seeded by ``seed``, for the truths and the stars).
    mu_window : (float, float), optional
        Count only the voxels inside the reliable range that also lie in this window of
        distance modulus: a fixed set of distances, so that runs whose reliable ranges
        differ (more stars reach closer) compare on the same voxels.

    Returns
    -------
    dict
        ``coverage_68`` (the validation's rule) and ``rank_coverage_68`` (randomised ranks
        in [0.16, 0.84]) over the (sightline, distance) voxels inside each sightline's
        reliable distance range, ``rank_coverage_68_se`` (its standard error from the
        spread between sightlines: the voxels of one sightline are correlated), ``n_voxels``, ``rank_histogram`` (10 bins, fractions),
        ``median_bias`` (posterior mean minus truth, mag), ``median_abs_error`` (of the
        posterior mean: the Bayes-optimal estimate when the truth is drawn from the prior
        and the exponents are 1), ``p90_abs_error`` and ``median_width_68`` (the central
        68% interval's full width, mag).
    """
    settings = settings or SamplerSettings()
    logp_dy = np.ascontiguousarray(logp_dy, np.float64)
    if logp_dy.shape != (N_DM, N_E):
        raise ValueError(f"logp_dy must have shape ({N_DM}, {N_E})")
    if n_sims < 1:
        raise ValueError("n_sims must be >= 1")
    if draw_truth is None:
        def draw_truth(g):
            return draw_profile_from_prior(logp_dy, g)
    rng = np.random.default_rng(seed)
    truth_rng = rng if truth_seed is None else np.random.default_rng(truth_seed)
    covered, ranks, bias, width = [], [], [], []
    for i in range(n_sims):
        y_true = np.asarray(draw_truth(truth_rng), np.int64)
        (x0, nx, y0, ny, off, data), _ = simulate_sightline(
            y_true, n_star, rng, mu_range=mu_range, sigma_mu=sigma_mu, sigma_ebv=sigma_ebv)
        w = np.ones(n_star) if weights is None else np.asarray(weights(n_star, rng), float)
        packed = pack_pixel(x0, nx, y0, ny, off, data, weights=w, weight_mode="loglike")
        if sample_fn is None:
            samples = sample_pixel(packed, logp_dy, settings, seed=seed * 100003 + i,
                                   retry=False).samples
        else:
            samples = np.asarray(sample_fn(packed, logp_dy, settings, seed * 100003 + i))
        stars = StarPosteriors(np.zeros(n_star), np.zeros(n_star), x0, nx, y0, ny, off, data)
        pdm = reliable.distance_probability(stars, np.arange(n_star), w)
        lo, hi = reliable.reliable_distance_range(pdm, DM_EDGES)
        inside = (DM_EDGES >= lo) & (DM_EDGES <= hi)
        if mu_window is not None:
            inside &= (DM_EDGES >= mu_window[0]) & (DM_EDGES <= mu_window[1])
        truth = 0.01 * y_true
        covered.append(coverage_68(samples, truth)[inside])
        ranks.append(truth_ranks(samples, truth, rng)[inside])
        bias.append((samples.mean(axis=0) - truth)[inside])
        q16, q84 = np.percentile(samples, [16, 84], axis=0)
        width.append((q84 - q16)[inside])
    per_sim = np.array([np.mean((r >= 0.16) & (r <= 0.84)) if r.size else np.nan
                        for r in ranks])
    per_sim = per_sim[np.isfinite(per_sim)]
    covered = np.concatenate(covered)
    ranks = np.concatenate(ranks)
    hist = np.histogram(ranks, bins=10, range=(0.0, 1.0))[0] / max(ranks.size, 1)
    bias = np.concatenate(bias)
    width = np.concatenate(width)

    def frac_or_nan(x):
        return float(np.mean(x)) if x.size else float("nan")

    return {"coverage_68": frac_or_nan(covered),
            "rank_coverage_68": frac_or_nan((ranks >= 0.16) & (ranks <= 0.84)),
            "rank_coverage_68_se": (float(per_sim.std(ddof=1) / math.sqrt(per_sim.size))
                                    if per_sim.size > 1 else float("nan")),
            "n_voxels": int(covered.size), "rank_histogram": hist,
            "median_bias": float(np.median(bias)) if bias.size else float("nan"),
            "median_abs_error": (float(np.median(np.abs(bias))) if bias.size
                                 else float("nan")),
            "p90_abs_error": (float(np.percentile(np.abs(bias), 90)) if bias.size
                              else float("nan")),
            "median_width_68": float(np.median(width)) if width.size else float("nan")}

def main(argv=None) -> int:
    """Print the coverage of the sampler on simulated sightlines (``--help``)."""
    ap = argparse.ArgumentParser(description="Simulation-based calibration of the DECaPS "
                                             "line-of-sight sampler on one sightline")
    ap.add_argument("--sims", type=int, default=40, help="simulated sightlines")
    ap.add_argument("--stars", type=int, default=100, help="stars per sightline")
    ap.add_argument("--rounds", type=int, default=1000)
    ap.add_argument("--sweeps", type=int, default=10)
    ap.add_argument("--prior-rounding", choices=("floor", "split"), default="floor",
                    help="the sampler's jump table")
    ap.add_argument("--weighting", choices=("none",) + pixelize.WEIGHT_MODES[:3],
                    default="none", help="none: every exponent 1; otherwise Gaussian pixel "
                                         "weights of stars spread over the weighting disc")
    ap.add_argument("--truth-scale", type=float, default=None,
                    help="draw the truths from the split table of the smooth model's means "
                         "times this (default: from the sampler's own table)")
    ap.add_argument("--clouds", type=int, default=0,
                    help="clouds of 0.4-0.7 mag added at 0.6-1.3 kpc")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--l", type=float, default=330.0)
    ap.add_argument("--b", type=float, default=-1.5)
    args = ap.parse_args(argv)
    means = prior.jump_prior_means(args.l, args.b, DM_EDGES)
    table = prior.log_jump_prior_table(means, 0.75, N_E, rounding=args.prior_rounding)
    truth_table = (table if args.truth_scale is None else
                   prior.log_jump_prior_table(means * args.truth_scale, 0.75, N_E,
                                              rounding="split"))

    def draw(rng):
        return add_clouds(draw_profile_from_prior(truth_table, rng), args.clouds, rng)

    weights = None
    if args.weighting != "none":
        def weights(n, rng):
            return pixelize.likelihood_exponents(gaussian_disc_weights(n, rng),
                                                 args.weighting)
    r = calibrate_sampler(table, n_sims=args.sims, n_star=args.stars,
                          settings=SamplerSettings(n_rounds=args.rounds,
                                                   sweeps_per_round=args.sweeps),
                          weights=weights, seed=args.seed, draw_truth=draw)
    print("| quantity | value |\n|---|---|")
    for k, v in r.items():
        text = " ".join(f"{x:.3f}" for x in v) if isinstance(v, np.ndarray) else f"{v:.4g}"
        print(f"| {k} | {text} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
