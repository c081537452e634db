"""The numba kernels of dustmaps_ext._core against numpy and healpy."""

from __future__ import annotations

import healpy as hp
import numpy as np
import pytest

from dustmaps_ext._core import los
from dustmaps_ext._core.modes import draw_key, per_pixel_draw
from helpers.reference import interpolate_like_dustmaps
from dustmaps_ext._core.pixels import PixelIndex, lb_to_nested, lb_to_ring, stable_order


def test_float16_rounding_equals_numpy_everywhere():
    rng = np.random.default_rng(0)
    halves = np.arange(65536, dtype=np.uint16).view(np.float16)
    grid = np.unique(halves[np.isfinite(halves)].astype(np.float64))
    mids = 0.5 * (grid[1:] + grid[:-1])  # exact ties: round half to even
    x = np.concatenate([
        grid, mids, np.nextafter(mids, np.inf), np.nextafter(mids, -np.inf),
        rng.normal(size=200_000) * 10.0 ** rng.uniform(-10, 5, 200_000),
        [65504.0, 65519.999, 65520.0, 1e6, -1e6, 0.0, -0.0, np.inf, -np.inf, np.nan],
    ])
    with np.errstate(over="ignore"):
        want = x.astype(np.float16).astype(np.float64)
    got = los.round_to_float16(x)
    assert np.array_equal(got, want, equal_nan=True)
    assert np.array_equal(np.signbit(got), np.signbit(want))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_median_equals_numpy_float16_median(n):
    rng = np.random.default_rng(n)
    vals = (rng.lognormal(0, 1.5, (5000, n)) * rng.choice([1e-6, 1.0, 30.0], (5000, 1))).astype(np.float16)
    vals[::97, 0] = np.nan
    got = los.median_of_values(vals.astype(np.float64)).astype(np.float16)
    want = np.median(vals, axis=1)
    assert np.array_equal(got, want, equal_nan=True)


def test_interpolation_equals_dustmaps_formula():
    rng = np.random.default_rng(1)
    edges = (4.0 + 0.125 * np.arange(120)).astype(np.float32)
    data = np.sort(rng.uniform(0, 3, (50, 3, 120)), axis=2).astype(np.float16)
    rows = rng.integers(-1, 50, 4000)
    dm = rng.uniform(0.0, 22.0, 4000)
    dm[::50] = edges[rng.integers(0, 120, 80)]  # exactly on edges
    dm[1::50] = np.nan
    got = los.values_at_distmod(data.view(np.uint16), rows, dm, edges, slot_first=1, n_slots=2)
    # independent evaluation with numpy, in the order of operations dustmaps uses
    want = interpolate_like_dustmaps(data.astype(np.float64)[:, 1:3], rows, dm, edges, np.float64)
    assert np.array_equal(got, want.astype(np.float16).astype(np.float64), equal_nan=True)


def test_pixel_index_single_nside_matches_searchsorted():
    rng = np.random.default_rng(2)
    nside = 1024
    table = np.unique(rng.integers(0, 12 * nside ** 2, 200_000)).astype(np.uint64)
    idx = PixelIndex(table, nside)
    l = rng.uniform(0, 360, 100_000)
    b = np.degrees(np.arcsin(rng.uniform(-1, 1, 100_000)))
    pix = hp.ang2pix(nside, l, b, nest=True, lonlat=True)
    pix[:5000] = table[rng.integers(0, table.size, 5000)].astype(np.int64)  # guaranteed hits
    got = idx.rows_of_pixels(pix)
    pos = np.searchsorted(table, pix.astype(np.uint64))
    hit = (pos < table.size) & (table[np.minimum(pos, table.size - 1)] == pix.astype(np.uint64))
    assert np.array_equal(got, np.where(hit, pos, -1))
    assert hit.sum() > 5000


def test_pixel_index_several_nsides_like_bayestar():
    rng = np.random.default_rng(3)
    # tile the sphere with a random mix of nside 64..512 pixels, then drop some
    nsides, pixels = [], []
    for parent in range(12 * 64 ** 2):
        level = rng.integers(0, 4)
        n = 64 << level
        children = parent * 4 ** level + np.arange(4 ** level)
        nsides.append(np.full(children.size, n))
        pixels.append(children)
    nsides = np.concatenate(nsides)
    pixels = np.concatenate(pixels)
    keep = rng.random(pixels.size) < 0.8
    nsides, pixels = nsides[keep], pixels[keep]
    idx = PixelIndex(pixels, nsides)
    l = rng.uniform(0, 360, 50_000)
    b = np.degrees(np.arcsin(rng.uniform(-1, 1, 50_000)))
    got = idx.rows(l, b)
    # brute force: ask healpy at every nside which row contains the point
    want = np.full(l.size, -1)
    for n in np.unique(nsides):
        p = hp.ang2pix(int(n), l, b, nest=True, lonlat=True)
        rows_n = np.flatnonzero(nsides == n)
        lookup = dict(zip(pixels[rows_n].tolist(), rows_n.tolist()))
        for i, pi in enumerate(p.tolist()):
            if pi in lookup:
                want[i] = lookup[pi]
    assert np.array_equal(got, want)
    assert (got >= 0).mean() > 0.7


def test_invalid_positions_give_no_pixel():
    pix = lb_to_nested(64, np.array([10.0, np.nan, 10.0, np.inf, 10.0]),
                       np.array([5.0, 5.0, 91.0, 0.0, np.nan]))
    assert pix[0] >= 0 and np.all(pix[1:] == -1)
    with pytest.raises(ValueError, match="power of two"):
        lb_to_nested(100, np.zeros(1), np.zeros(1))


def test_per_pixel_draw_is_uniform_and_consistent():
    rng = np.random.default_rng(4)
    rows = rng.integers(0, 100_000, 300_000)
    draws = per_pixel_draw(rows, 5, draw_key(np.random.default_rng(7)))
    counts = np.bincount(draws, minlength=5)
    assert np.all(np.abs(counts / rows.size - 0.2) < 0.01)
    first = {}
    for r, d in zip(rows[:20000].tolist(), draws[:20000].tolist()):
        assert first.setdefault(r, d) == d


@pytest.mark.parametrize("parallel", [False, True])
def test_ring_pixels_match_astropy_healpix_exactly(parallel):
    """Random directions, points exactly on pixel boundaries (healpy's vertices and edges),
    regular grids through boundaries, l = 0/360/negative/beyond 360, the poles."""
    import astropy.units as u
    import healpy as hp
    from astropy_healpix.core import lonlat_to_healpix

    rng = np.random.default_rng(0)
    l = rng.uniform(-360, 720, 300_000)
    b = np.degrees(np.arcsin(rng.uniform(-1, 1, l.size)))
    vec = hp.boundaries(1024, rng.integers(0, 12 * 1024 ** 2, 20_000), step=4)
    lv, bv = hp.vec2ang(np.moveaxis(vec, 1, 2).reshape(-1, 3), lonlat=True)
    g1, g2 = np.meshgrid(np.arange(-360, 360.01, 0.0439453125), np.arange(-90, 90.01, 1.0))
    l = np.concatenate([l, lv, g1.ravel(), [0.0, 360.0, -0.0, 720.0, 45.0, 0.0, 0.0]])
    b = np.concatenate([b, bv, g2.ravel(), [0.0, 0.0, 0.0, 0.0, 0.0, 90.0, -90.0]])
    expected = lonlat_to_healpix(l * u.deg, b * u.deg, 1024, order="ring")
    np.testing.assert_array_equal(lb_to_ring(1024, l, b, parallel=parallel), expected)
    bad = lb_to_ring(1024, np.array([np.nan, 1.0, np.inf, 1.0]), np.array([0.0, np.nan, 0.0, 91.0]))
    np.testing.assert_array_equal(bad, -1)


@pytest.mark.parametrize("nside", [1, 64, 8192])
def test_ring_pixels_at_other_nsides_match_astropy_healpix(nside):
    """The RING kernel is not tied to the Wang et al. map's nside 1024: random directions
    and points on the pixel boundaries of other resolutions, as lb_to_nested's shapes."""
    import astropy.units as u
    from astropy_healpix.core import lonlat_to_healpix

    rng = np.random.default_rng(nside)
    l = rng.uniform(-360, 720, 50_000)
    b = np.degrees(np.arcsin(rng.uniform(-1, 1, l.size)))
    vec = hp.boundaries(nside, rng.integers(0, 12 * nside ** 2, 2000), step=2)
    lv, bv = hp.vec2ang(np.moveaxis(vec, 1, 2).reshape(-1, 3), lonlat=True)
    l = np.concatenate([l, lv]).reshape(-1, 2)
    b = np.concatenate([b, bv]).reshape(-1, 2)
    expected = lonlat_to_healpix(l * u.deg, b * u.deg, nside, order="ring")
    got = lb_to_ring(nside, l, b)
    assert got.shape == l.shape
    np.testing.assert_array_equal(got, expected)
    # the same pixels as healpy away from the boundaries (healpy: RING of the NESTED pixel)
    healpy_ring = hp.nest2ring(nside, lb_to_nested(nside, l[:10], b[:10]))
    np.testing.assert_array_equal(got[:10], healpy_ring)
    with pytest.raises(ValueError, match="nside"):
        lb_to_ring(100, l, b)


@pytest.mark.parametrize("nside", [1, 2, 64, 1024, 2048, 8192])
def test_nested_pixels_equal_healpy_everywhere(nside):
    """lb_to_nested is a compiled port of healpy's ang2pix: same pixel for every direction."""
    rng = np.random.default_rng(nside)
    n = 400_000
    grid_l, grid_b = np.meshgrid(np.arange(0, 360, 0.25), np.arange(-90, 90.001, 0.25))
    special_b = np.array([-90, 90, 0, 41.8103148957786, -41.8103148957786, 89.99, -89.99, 89.43])
    cases = [
        (rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))),
        (rng.uniform(-720, 720, n), rng.uniform(-90, 90, n)),  # longitudes beyond [0, 360)
        (grid_l.ravel(), grid_b.ravel()),  # directions on pixel boundaries
        (rng.uniform(0, 360, n), np.clip(rng.choice(special_b, n) + rng.normal(0, 1e-9, n), -90, 90)),
        (rng.uniform(0, 360, n), rng.uniform(89, 90, n) * rng.choice([-1, 1], n)),  # polar caps
    ]
    for l, b in cases:
        want = hp.ang2pix(nside, np.radians(90.0 - b), np.radians(l), nest=True)
        assert np.array_equal(lb_to_nested(nside, l, b), want)


@pytest.mark.parametrize("n, top", [(0, 5), (1, 5), (1000, 3), (100_000, 12 * 8192 ** 2),
                                    (5000, 2 ** 61)])
def test_stable_order_equals_numpy_stable_argsort(n, top):
    rng = np.random.default_rng(n)
    keys = rng.integers(-1, top, n)
    keys[: n // 10] = -1  # ties, incl. absent pixels
    np.testing.assert_array_equal(stable_order(keys), np.argsort(keys, kind="stable"))
    sorted_keys = np.sort(keys)
    np.testing.assert_array_equal(stable_order(sorted_keys), np.arange(n))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("tail", [(), (3,), (2, 5)])
def test_place_scaled_equals_numpy_scale_then_assign(dtype, tail):
    rng = np.random.default_rng(7)
    n_out, n = 50, 20
    values = (rng.random((n,) + tail) * 3).astype(dtype)
    values.flat[::7] = np.nan
    index = rng.permutation(n_out)[:n]
    scale = 1.0 if dtype == np.float16 else 0.884
    expected = np.full((n_out,) + tail, -1.0, np.float32)
    ref = values.copy()
    ref *= ref.dtype.type(scale)
    expected[index] = ref
    out = np.full((n_out,) + tail, -1.0, np.float32)
    los.place_scaled(out, index, values, scale)
    np.testing.assert_array_equal(out.view(np.uint32), expected.view(np.uint32))


def test_place_scaled_rejects_what_it_cannot_do():
    out = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match="do not fit"):
        los.place_scaled(out, np.arange(2), np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="unscaled"):
        los.place_scaled(out, np.arange(2), np.zeros((2, 2), np.float16), 0.884)
    with pytest.raises(TypeError, match="float32"):
        los.place_scaled(out.astype(np.float64), np.arange(2), np.zeros((2, 2), np.float32))
    with pytest.raises(TypeError, match="float16, float32 or float64"):
        los.place_scaled(out, np.arange(2), np.zeros((2, 2), np.int32))


def test_lb_to_unit_vectors_equals_healpy():
    from dustmaps_ext.healpix import lb_to_unit_vectors

    rng = np.random.default_rng(5)
    l_deg = rng.uniform(-180.0, 540.0, 1000)
    b_deg = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, 1000)))
    vec = lb_to_unit_vectors(l_deg, b_deg)
    np.testing.assert_allclose(vec, hp.ang2vec(l_deg, b_deg, lonlat=True), atol=1e-15)
    assert lb_to_unit_vectors(l_deg.reshape(10, 100), b_deg.reshape(10, 100)).shape == (10, 100, 3)
