"""Validation of the DECaPS pipeline on the simulated galaxy (Zucker et al. 2025 §4.2).

Draws stars from :func:`dustmaps_ext_build.galaxy.default_galaxy` on a sky patch, builds per-star
posteriors with :func:`.mock.mock_catalogue` (including dwarf/giant bimodality and the
contaminants that the cuts must remove), runs the pipeline block by block, and compares the
recovered mean profiles with the galaxy's true cumulative E(B-V) inside each pixel's reliable
distance range, and the distance of a cloud.

Run ``python -m dustmaps_ext_build.decaps.validate`` (``--help`` for the options).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import healpy as hp
import numpy as np

from . import filters, mock, pipeline, pixelize, prior
from .sampler import SamplerSettings

__all__ = ["psf_weighted_truth", "validate_on_galaxy", "validation_galaxy"]


def validation_galaxy(nside: int = 2048):
    """The default galaxy's disk with small clouds around (l, b) = (330, -1.5) deg.

    Seven 3D Gaussian clouds between 0.6 and 2.4 kpc, centred within 0.1 deg of that
    direction, whose angular sigma spans 1-10 arcmin at the scale of an nside-8192 map,
    i.e. ``8192 / nside`` times larger at ``nside`` (4-40 arcmin at nside 2048), with
    columns of 0.3-1.2 mag.
    """
    from dustmaps_ext_build.galaxy import Cloud, SimulatedGalaxy

    scale = 8192 / nside
    spec = [  # (dl, db) deg, distance kpc, sigma arcmin at nside 8192, column mag
        ((0.0, 0.0), 1.6, 6.0, 1.2), ((-0.06, 0.04), 0.6, 2.5, 0.5),
        ((0.05, -0.05), 2.4, 4.0, 0.8), ((0.07, 0.06), 1.1, 1.5, 0.4),
        ((-0.07, -0.06), 0.9, 10.0, 0.6), ((0.02, 0.08), 2.0, 1.0, 0.3),
        ((-0.03, -0.09), 1.3, 3.0, 0.7)]
    clouds = tuple(
        Cloud(l_deg=330.0 + dl / np.cos(np.radians(1.5)), b_deg=-1.5 + db, distance_kpc=d,
              radius_kpc=d * np.radians(scale * sig / 60.0), column_mag=col)
        for (dl, db), d, sig, col in spec)
    return SimulatedGalaxy(clouds=clouds)


def psf_weighted_truth(gal, l_deg, b_deg, d_kpc, cfg, n_points: int = 256,
                       seed: int = 0) -> np.ndarray:
    """Truth averaged over the sky with the star weights' Gaussian (truncated as they are).

    Shape (n_pix, n_dist): the cumulative profile at ``n_points`` directions around each
    pixel centre, drawn from the weighting Gaussian within its truncation radius (the same
    draws for every pixel).
    """
    rng = np.random.default_rng(seed)
    fwhm = cfg.fwhm_pixels * np.degrees(pixelize.pixel_size_rad(cfg.nside))
    sigma = fwhm / np.sqrt(8 * np.log(2))
    off = rng.normal(0.0, sigma, (4 * n_points, 2))
    off = off[np.hypot(off[:, 0], off[:, 1]) <= cfg.truncate_fwhm * fwhm][:n_points]
    out = np.zeros((np.size(l_deg), np.size(d_kpc)))
    for i, (li, bi) in enumerate(zip(np.atleast_1d(l_deg), np.atleast_1d(b_deg))):
        pl = li + off[:, 0] / np.cos(np.radians(bi))
        pb = bi + off[:, 1]
        out[i] = gal.cumulative_profile(pl, pb, d_kpc).mean(axis=0)
    return out


def validate_on_galaxy(*, n_stars: int = 1200, l_range=(329.75, 330.25),
                       b_range=(-1.75, -1.25), footprint_l=(329.9, 330.1),
                       footprint_b=(-1.6, -1.4),
                       d_range_kpc=(0.1, 4.0), nside: int = 2048, n_rounds: int = 2500,
                       sweeps_per_round: int = 20, retry: bool = False, seed: int = 42,
                       weight_mode: str = "loglike", smooth: bool = True,
                       min_cloud_column: float = 0.2, galaxy=None,
                       prior_rounding: str = "floor", prior_model=None,
                       work_dir=None) -> dict:
    """Run the pipeline on a simulated patch and measure its errors.

    The default density, 1200 stars on 0.5 x 0.5 deg at nside 2048, puts about 300 stars
    in a pixel's weighting disc (radius 8.6 arcmin at nside 2048): the paper's density in
    stars per disc, which is what a pixel's fit sees (the same stars per disc at nside 8192
    are 16 times denser on the sky). ``galaxy`` replaces :func:`validation_galaxy` (e.g.
    its disk alone, ``dataclasses.replace(validation_galaxy(), clouds=())``);
    ``prior_rounding`` and ``prior_model`` are :class:`.config.DecapsBuildConfig`'s (default:
    its defaults).

    Returns
    -------
    dict
        ``n_footprint_pixels`` (pixel centres in the footprint box, counted with healpy),
        ``n_pixels`` (in the release), ``n_fitted``, ``n_infilled``,
        ``n_no_reliable_range``, ``median_abs_err``, ``p90_abs_err``,
        ``median_abs_err_psf`` and ``median_bias_psf`` (against the truth averaged with the
        star weights' Gaussian, :func:`psf_weighted_truth`: what a map with that PSF can
        recover), ``coverage_68_psf`` (the same coverage against it),
        ``frac_within_0p1``, ``median_bias`` (inside the reliable ranges, mag),
        ``frac_voxels_smooth``, ``median_abs_err_smooth``, ``median_bias_smooth`` and
        ``coverage_68_smooth`` (the voxels away from the clouds' steps, where the
        clouds' column changes by less than 0.05 mag within +-0.25 mag in distance
        modulus),
        ``front_bias`` (median error in front of the first cloud of >= ``min_cloud_column``
        mag), ``coverage_68`` (fraction of (pixel, distance) voxels in the reliable range
        whose truth lies between the 16th and 84th percentiles of the 100 samples),
        ``n_cloud_crossings`` and ``frac_clouds_within_10pct`` (clouds of at least
        ``min_cloud_column`` mag in the reliable range whose distance -- where the mean
        profile reaches the truth at the cloud's centre -- is within 10%), ``converged``
        (fraction), ``median_dm_reliable_min`` and ``median_dm_reliable_max`` (the
        fitted pixels' reliable range; the paper's median is 9.6 to 14.9), ``median_n_stars``, ``median_sum_weights`` and ``cpu_s_per_pixel``
        (stage 2, process time, per fitted pixel).
    """
    gal = validation_galaxy(nside) if galaxy is None else galaxy
    stars, _ = mock.mock_catalogue(gal, n_stars, np.random.default_rng(seed),
                                   l_range_deg=l_range, b_range_deg=b_range,
                                   d_range_kpc=d_range_kpc)
    d = np.linspace(0.0, 1.5, 151)
    max_ebv = filters.max_reddening_curve(d, np.full(d.size, 10.0))
    smp = SamplerSettings(n_rounds=n_rounds, sweeps_per_round=sweeps_per_round)
    cfg = pipeline.DecapsBuildConfig(
        nside=nside, nside_block=max(1, nside // 16), retry=retry, seed=seed, sampler=smp,
        n_keep_samples=smp.n_samples, weight_mode=weight_mode, prior_rounding=prior_rounding,
        prior_model=prior_model or prior.FlaredSechDiskDustModel(),
        infill_window=3,
        infill_train=5, infill_median=3, l_range_deg=footprint_l, b_range_deg=footprint_b)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        tmp = Path(tmp)
        prep = pipeline.prepare_inputs(stars, tmp / "stars", cfg, max_ebv, smooth=smooth)
        blocks = np.union1d(prep["blocks"], pipeline.footprint_blocks(cfg))
        t0 = time.process_time()
        res = [pipeline.process_block_file(int(b), star_dir=str(tmp / "stars"), config=cfg,
                                           star_blocks=prep["blocks"]) for b in blocks]
        cpu = time.process_time() - t0
        blk = pipeline.concat_block_results(res)
        out = pipeline.assemble_release(blk, tmp / "map.h5", cfg, progress=False)
    centre = hp.ang2vec(330.0, -1.5, lonlat=True)
    disc = hp.query_disc(nside, centre, np.radians(1.0), nest=True)
    dl, db = hp.pix2ang(nside, disc, nest=True, lonlat=True)
    n_foot = int(np.count_nonzero(cfg.in_footprint(dl, db)))
    fitted = ~out["infilled"] & np.isfinite(out["mean"]).all(axis=1)
    pix = out["healpix_index"][fitted].astype(np.int64)
    l, b = hp.pix2ang(nside, pix, nest=True, lonlat=True)
    dm = pipeline.DM_EDGES.astype(float)
    dist = 10 ** (dm / 5 - 2)
    truth = gal.cumulative_profile(l, b, dist)
    lo = out["dm_reliable_min"][fitted][:, None]
    hi = out["dm_reliable_max"][fitted][:, None]
    with np.errstate(invalid="ignore"):
        inside = (dm[None, :] >= lo) & (dm[None, :] <= hi)
    mean = out["mean"][fitted]
    err = (mean - truth)[inside]
    smooth_truth = psf_weighted_truth(gal, l, b, dist, cfg)
    err_psf = (mean - smooth_truth)[inside]
    # voxels away from the clouds' steps: the clouds' column changes by < 0.05 mag within
    # +-0.25 mag in distance modulus (two bins), where a step's position does not count
    disk = dataclasses.replace(gal, clouds=())

    def cloud_column(shift):
        d_s = 10 ** ((dm + shift) / 5 - 2)
        return gal.cumulative_profile(l, b, d_s) - disk.cumulative_profile(l, b, d_s)

    smooth_part = (np.abs(cloud_column(0.25) - cloud_column(-0.25)) < 0.05)[inside]
    q16, q84 = np.percentile(out["samples"][fitted], [16, 84], axis=1)
    covered = ((truth >= q16 - 1e-6) & (truth <= q84 + 1e-6))[inside]
    covered_psf = ((smooth_truth >= q16 - 1e-6) & (smooth_truth <= q84 + 1e-6))[inside]
    found, front = [], []
    for i in range(pix.size):
        crossings = [c for c in gal.cloud_distances_along(l[i], b[i], min_cloud_column)]
        if crossings:
            first = 5 * np.log10(crossings[0][0] * 100) - 0.5
            front.extend((mean[i] - truth[i])[inside[i] & (dm < first)])
        for d_c, _ in crossings:
            mu_c = 5 * np.log10(d_c * 100)
            if not lo[i, 0] <= mu_c <= hi[i, 0]:
                continue
            level = float(gal.cumulative_profile(l[i:i + 1], b[i:i + 1], np.array([d_c]))[0, 0])
            above = np.flatnonzero(mean[i] >= level)
            if above.size:
                j = above[0]
                # linear interpolation between the edges that bracket the level
                if j > 0 and mean[i, j] > mean[i, j - 1]:
                    t = (level - mean[i, j - 1]) / (mean[i, j] - mean[i, j - 1])
                    mu_f = dm[j - 1] + t * (dm[j] - dm[j - 1])
                else:
                    mu_f = dm[j]
                found.append(abs(10 ** ((mu_f - mu_c) / 5) - 1) <= 0.1)
            else:
                found.append(False)
    with np.errstate(invalid="ignore"):
        no_range = int(np.count_nonzero(~(out["dm_reliable_min"][fitted]
                                          < out["dm_reliable_max"][fitted])))
    return {"n_footprint_pixels": n_foot, "n_pixels": int(out["healpix_index"].size),
            "n_fitted": int(fitted.sum()), "n_infilled": int(out["infilled"].sum()),
            "n_no_reliable_range": no_range,
            "median_abs_err": float(np.median(np.abs(err))),
            "p90_abs_err": float(np.percentile(np.abs(err), 90)),
            "frac_within_0p1": float(np.mean(np.abs(err) < 0.1)),
            "median_bias": float(np.median(err)),
            "frac_voxels_smooth": float(np.mean(smooth_part)),
            "median_abs_err_smooth": (float(np.median(np.abs(err[smooth_part])))
                                      if smooth_part.any() else float("nan")),
            "median_bias_smooth": (float(np.median(err[smooth_part]))
                                   if smooth_part.any() else float("nan")),
            "coverage_68_smooth": (float(np.mean(covered[smooth_part]))
                                   if smooth_part.any() else float("nan")),
            "front_bias": float(np.median(front)) if front else float("nan"),
            "median_abs_err_psf": float(np.median(np.abs(err_psf))),
            "median_bias_psf": float(np.median(err_psf)),
            "coverage_68": float(np.mean(covered)),
            "coverage_68_psf": float(np.mean(covered_psf)),
            "n_cloud_crossings": len(found),
            "frac_clouds_within_10pct": float(np.mean(found)) if found else float("nan"),
            "converged": float(np.mean(out["converged"][fitted])),
            "median_dm_reliable_min": float(np.nanmedian(lo)),
            "median_dm_reliable_max": float(np.nanmedian(hi)),
            "median_n_stars": float(np.median(out["n_stars"][fitted])),
            "median_sum_weights": float(np.median(blk["sum_weights"][blk["fitted"]])),
            "cpu_s_per_pixel": cpu / max(1, int(fitted.sum()))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Validate the DECaPS pipeline on the simulated "
                                             "galaxy")
    ap.add_argument("--stars", type=int, default=1200)
    ap.add_argument("--weighting", choices=("loglike", "loglike_kish", "loglike_raw", "image"),
                    default="loglike")
    ap.add_argument("--no-smooth", action="store_true")
    ap.add_argument("--d-max", type=float, default=4.0,
                    help="farthest star (kpc; the stars are drawn between 0.1 kpc and this)")
    ap.add_argument("--rounds", type=int, default=2500)
    ap.add_argument("--sweeps", type=int, default=20)
    ap.add_argument("--retry", action="store_true", help="the paper's escalating retries")
    ap.add_argument("--no-clouds", action="store_true",
                    help="the validation galaxy's smooth disk alone")
    ap.add_argument("--prior-rounding", choices=("floor", "split"), default="floor",
                    help="discretisation of the jump prior (DecapsBuildConfig.prior_rounding)")
    ap.add_argument("--prior-sigma-ln", type=float, default=None,
                    help="width of the jump prior's log-normal (bayestar's "
                         "--sigma-log-Delta-EBV; default 0.75)")
    ap.add_argument("--prior-mean-ceil", type=float, default=None,
                    help="ceiling of the jump prior's mean jump per bin, mag (bayestar's "
                         "exp(--log-Delta-EBV-max); default exp(-3))")
    args = ap.parse_args(argv)
    pm = prior.FlaredSechDiskDustModel()
    if args.prior_sigma_ln is not None:
        pm = dataclasses.replace(pm, sigma_ln=args.prior_sigma_ln)
    if args.prior_mean_ceil is not None:
        pm = dataclasses.replace(pm, mean_ceil=args.prior_mean_ceil)
    gal = dataclasses.replace(validation_galaxy(), clouds=()) if args.no_clouds else None
    r = validate_on_galaxy(n_stars=args.stars, n_rounds=args.rounds,
                           sweeps_per_round=args.sweeps, retry=args.retry,
                           weight_mode=args.weighting, smooth=not args.no_smooth, galaxy=gal,
                           prior_rounding=args.prior_rounding, prior_model=pm,
                           d_range_kpc=(0.1, args.d_max))
    print("| quantity | value |\n|---|---|")
    for k, v in r.items():
        print(f"| {k} | {v:.4g} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
