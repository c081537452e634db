"""End-to-end DECaPS pipeline on a small patch of the simulated galaxy (blocks run serially)."""

from __future__ import annotations

import warnings

import healpy as hp
import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord

from dustmaps_ext_build.decaps import filters, mock, pipeline, sampler
from dustmaps_ext_build.decaps.inputs import StarPosteriors
from dustmaps_ext_build.galaxy import default_galaxy

# Stars on a 0.3 x 0.3 deg patch in front of and behind the cloud at (l, b, d) =
# (330, -1.5, 1.6 kpc); the map covers its central 0.12 x 0.12 deg at nside 2048 (1.7' pixels).
L_RANGE, B_RANGE = (329.85, 330.15), (-1.65, -1.35)
FOOT_L, FOOT_B = (329.95, 330.07), (-1.56, -1.44)
N_STARS = 400
D_RANGE = (0.1, 4.0)
CLOUD_MU = 5 * np.log10(1.6 * 100)

pytestmark = pytest.mark.slow  # one ~10 s build shared by the module


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("decaps_build")
    gal = default_galaxy()
    stars, truth = mock.mock_catalogue(gal, N_STARS, np.random.default_rng(42),
                                       l_range_deg=L_RANGE, b_range_deg=B_RANGE,
                                       d_range_kpc=D_RANGE)
    # no stars in one corner: the pixels there have too few and are infilled
    corner = (stars.l > 330.04) & (stars.b > -1.46)
    stars = stars.subset(~corner)
    truth = {k: v[~corner] for k, v in truth.items()}
    d = np.linspace(0.0, 1.5, 151)
    max_ebv = filters.max_reddening_curve(d, np.full(d.size, 10.0))
    # min_stars is raised so that the sparser pixels at the footprint's edge are infilled
    cfg = pipeline.DecapsBuildConfig(
        nside=2048, nside_block=512, retry=False, seed=7, min_stars=180,
        sampler=sampler.SamplerSettings(n_rounds=100, sweeps_per_round=6, n_samples=20),
        infill_window=3, infill_train=5, infill_median=3, l_range_deg=FOOT_L,
        b_range_deg=FOOT_B)
    prep = pipeline.prepare_inputs(stars, tmp / "stars", cfg, max_ebv)
    results = [pipeline.process_block_file(int(bid), star_dir=str(tmp / "stars"), config=cfg)
               for bid in prep["blocks"]]
    blocks = pipeline.concat_block_results(results)
    out = pipeline.assemble_release(blocks, tmp / "map.h5", cfg)
    return {"gal": gal, "cfg": cfg, "prep": prep, "blocks": blocks, "out": out,
            "path": tmp / "map.h5", "truth": truth, "tmp": tmp}


def test_cuts_remove_the_contaminants(built):
    kind = built["truth"]["kind"]
    keep = built["prep"]["masks"]["keep"]
    for k in (1, 2, 3, 4):  # bad fit, M dwarf, far, unphysical
        assert keep[kind == k].mean() < 0.15, k
    assert keep[kind == 0].mean() > 0.9


def test_recovered_profiles_match_the_simulated_galaxy(built):
    out, cfg, gal = built["out"], built["cfg"], built["gal"]
    fitted = ~out["infilled"] & np.isfinite(out["mean"]).all(axis=1)
    assert fitted.sum() >= 5
    l, b = hp.pix2ang(cfg.nside, out["healpix_index"][fitted], nest=True, lonlat=True)
    dm = pipeline.DM_EDGES.astype(float)
    truth = gal.cumulative_profile(l, b, 10 ** (dm / 5 - 2))
    lo = out["dm_reliable_min"][fitted][:, None]
    hi = out["dm_reliable_max"][fitted][:, None]
    inside = (dm[None, :] >= lo) & (dm[None, :] <= hi)
    err = np.abs(out["mean"][fitted] - truth)[inside]
    assert np.median(err) < 0.12, np.median(err)  # short chains; see the docs for long ones
    # the cloud at 1.6 kpc (mu = 11.02): where the mean profile rises most over 0.5 mag
    for prof in out["mean"][fitted]:
        found = dm[np.argmax(prof[4:] - prof[:-4])] + 0.25
        assert abs(found - CLOUD_MU) < 0.3


def test_flags_and_infill(built):
    out, blocks = built["out"], built["blocks"]
    few = blocks["n_stars"] < built["cfg"].min_stars
    assert few.any() and (~few).any()
    order = np.argsort(blocks["healpix_index"])
    np.testing.assert_array_equal(out["infilled"], few[order] & np.isfinite(out["mean"]).all(1))
    assert not np.any(out["converged"] & out["infilled"])
    ok = np.isfinite(out["dm_reliable_min"]) & np.isfinite(out["dm_reliable_max"])
    assert np.all(out["dm_reliable_min"][ok] <= out["dm_reliable_max"][ok])


def test_release_file_reads_in_dustmaps(built, capsys):
    with warnings.catch_warnings():  # dustmaps warns at import when ~/.dustmapsrc is absent
        warnings.simplefilter("ignore")
        from dustmaps.decaps import DECaPSQueryLite

    out, cfg = built["out"], built["cfg"]
    q = DECaPSQueryLite(map_fname=str(built["path"]))
    capsys.readouterr()
    i = int(np.flatnonzero(np.isfinite(out["mean"]).all(1))[0])
    l, b = hp.pix2ang(cfg.nside, int(out["healpix_index"][i]), nest=True, lonlat=True)
    dm = 11.0
    c = SkyCoord(l * u.deg, b * u.deg, distance=10 ** (dm / 5 - 2) * u.kpc, frame="galactic")
    got = q(c, mode="mean")
    x = int(round((dm - 4.0) / 0.125))
    assert float(got) == pytest.approx(float(out["mean"][i, x].astype(np.float16)), abs=1e-3)
    flags = q(c, mode="mean", return_flags=True)[1]
    assert bool(flags["infilled"]) == bool(out["infilled"][i])


def test_pixel_results_do_not_depend_on_blocking(built):
    """Seeds depend on (seed, pixel) only: the pixels of a smaller block (as a differently
    partitioned or resumed run would group them) get exactly the same numbers."""
    cfg = built["cfg"]
    cfg2 = pipeline.DecapsBuildConfig(**{**cfg.__dict__, "nside_block": 1024})
    a = built["blocks"]
    big = int(a["healpix_index"][0]) // (cfg.nside // cfg.nside_block) ** 2
    stars = StarPosteriors.load(built["tmp"] / "stars" / f"stars_{big:06d}.npz")
    sub = int(a["healpix_index"][0]) // (cfg.nside // cfg2.nside_block) ** 2
    b = pipeline.process_block(sub, stars, cfg2)
    assert b["healpix_index"].size >= 1
    ia = np.searchsorted(a["healpix_index"], b["healpix_index"])
    np.testing.assert_array_equal(a["healpix_index"][ia], b["healpix_index"])
    for key in ("mean", "samples", "converged", "dm_reliable_min", "n_stars"):
        np.testing.assert_array_equal(a[key][ia], b[key])


def test_fast_layout_and_package_classes_agree_with_dustmaps(built, tmp_path, capsys):
    # dustmaps_ext.decaps (repack, DECaPSQuery) lands with the query half at merge time
    dd = pytest.importorskip("dustmaps_ext.decaps")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from dustmaps.decaps import DECaPSQueryLite
    out, cfg = built["out"], built["cfg"]
    fast = dd.repack(built["path"], tmp_path / "fast.h5", progress=False)
    ok = np.flatnonzero(np.isfinite(out["mean"]).all(1))[:5]
    l, b = hp.pix2ang(cfg.nside, out["healpix_index"][ok].astype(np.int64), nest=True,
                      lonlat=True)
    c = SkyCoord(l * u.deg, b * u.deg, distance=np.linspace(0.3, 5, ok.size) * u.kpc,
                 frame="galactic")
    ref = DECaPSQueryLite(map_fname=str(built["path"]))(c, mode="mean")
    for path in (built["path"], fast):
        got = dd.DECaPSQuery(str(path))(c, mode="mean")
        capsys.readouterr()
        np.testing.assert_array_equal(np.asarray(got), np.asarray(ref))
