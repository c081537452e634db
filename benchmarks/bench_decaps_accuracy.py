"""Benchmark: the accuracy the data allow on one DECaPS sightline (issue 19, point 8).

Run ``nice -n 10 python benchmarks/bench_decaps_accuracy.py`` (``--quick`` for a short run).

On sightlines whose truth is drawn from the sampler's own jump prior (towards (330, -1.5)
deg, the validation galaxy's centre) and whose stars are drawn from the sampler's own
likelihood (:mod:`dustmaps_ext_build.decaps.calibration`), the posterior mean is the
Bayes-optimal estimate of the profile under the model: no method has a smaller average
error on such skies. Its median |error| inside the reliable distance range is therefore the
accuracy the data allow at a given number and quality of stars.

Each row: ``n`` stars per weighting disc (x1 = 274, the validation's median), spread
uniformly over the disc with the pipeline's Gaussian weights as likelihood exponents
(``loglike_kish``: Kish's normalisation, under which the samples are calibrated; ``loglike``:
the default, exponents summing to ``n``; ``none``: every exponent 1, every star seeing the
pixel-centre profile -- no weighting at all, an upper bound on what the stars carry);
per-star uncertainties of the validation mock (sigma_mu 0.2-0.6 mag, sigma_E 0.03-0.08 mag,
:func:`dustmaps_ext_build.decaps.mock.mock_catalogue`), sigma_E optionally scaled.
Reported: the median and 90th percentile |posterior mean - truth|, the median half-width
of the samples' central 68% interval, the rank coverage of that interval, over the
(sightline, distance) voxels inside each sightline's reliable range (Appendix B of Zucker et
al. 2025) and within mu = 9.5-12.875 (the validation galaxy's median reliable range): the
same distances for every row, since more stars reach closer, where the profile is near zero
and the error small. Every row sees the same true profiles.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dustmaps_ext_build.decaps import calibration, pixelize, prior  # noqa: E402
from dustmaps_ext_build.decaps.inputs import N_E  # noqa: E402
from dustmaps_ext_build.decaps.sampler import SamplerSettings  # noqa: E402

#: Stars per weighting disc of the validation galaxy (median).
N_STAR_VALIDATION = 274

#: Distances where the errors are measured (inside each sightline's reliable range too):
#: the validation galaxy's median reliable range, the same voxels for every row.
MU_WINDOW = (9.5, 12.875)

#: The default rows: (weighting, stars factor, sigma_E scale, sightlines).
ROWS = (("loglike_kish", 1, 1.0, 40), ("loglike_kish", 4, 1.0, 24),
        ("loglike_kish", 16, 1.0, 8), ("loglike_kish", 1, 0.5, 40),
        ("loglike", 1, 1.0, 40), ("loglike", 4, 1.0, 24), ("loglike", 1, 0.5, 40),
        ("none", 1, 1.0, 40))


def accuracy_row(weighting: str, factor: int, e_scale: float, n_sims: int, *,
                 settings: SamplerSettings, seed: int) -> dict:
    """The calibration run of one row (see the module docstring)."""
    means = prior.jump_prior_means(330.0, -1.5, calibration.DM_EDGES)
    table = prior.log_jump_prior_table(means, 0.75, N_E)
    weights = None
    if weighting != "none":
        def weights(n, rng):
            return pixelize.likelihood_exponents(calibration.gaussian_disc_weights(n, rng),
                                                 weighting)
    return calibration.calibrate_sampler(
        table, n_sims=n_sims, n_star=N_STAR_VALIDATION * factor, settings=settings,
        weights=weights, seed=seed, sigma_ebv=(0.03 * e_scale, 0.08 * e_scale),
        truth_seed=seed + 1, mu_window=MU_WINDOW)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1000)
    ap.add_argument("--sweeps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--row", action="append", default=None,
                    help="weighting:factor:e_scale:sims (repeatable; default: the full grid)")
    ap.add_argument("--quick", action="store_true", help="4 sightlines per row, x1 and x4")
    ap.add_argument("--out", default="benchmarks/results/bench_decaps_accuracy.md")
    args = ap.parse_args(argv)
    if args.row:
        rows = [(w, int(f), float(e), int(s)) for w, f, e, s in
                (r.split(":") for r in args.row)]
    elif args.quick:
        rows = [("loglike_kish", 1, 1.0, 4), ("loglike_kish", 4, 1.0, 4)]
    else:
        rows = list(ROWS)
    settings = SamplerSettings(n_rounds=args.rounds, sweeps_per_round=args.sweeps)
    lines = ["| exponents | stars per disc | sigma_E (mag) | sightlines | voxels | median abs "
             "error | 90th pct abs error | median bias | median 68% half-width | rank "
             "coverage | CPU-s per sightline |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for weighting, factor, e_scale, n_sims in rows:
        t0 = time.process_time()
        r = accuracy_row(weighting, factor, e_scale, n_sims, settings=settings, seed=args.seed)
        cpu = (time.process_time() - t0) / n_sims
        lines.append(
            f"| {weighting} | {N_STAR_VALIDATION * factor} | {0.03 * e_scale:.3f}-"
            f"{0.08 * e_scale:.3f} | {n_sims} | {r['n_voxels']} | {r['median_abs_error']:.4f} "
            f"| {r['p90_abs_error']:.4f} | {r['median_bias']:+.4f} | "
            f"{r['median_width_68'] / 2:.4f} | {r['rank_coverage_68']:.3f} +- "
            f"{r['rank_coverage_68_se']:.3f} | {cpu:.1f} |")
        print(lines[-1], flush=True)
    head = (f"Command: `{' '.join(['python', 'benchmarks/bench_decaps_accuracy.py'] + (argv or sys.argv[1:]))}`; "
            f"{args.rounds} rounds x {args.sweeps} sweeps, seed {args.seed}; "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, "
            f"Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}.\n\n")
    text = head + "\n".join(lines) + "\n"
    if not args.quick:
        Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
