"""Adaptive HEALPix sightlines and the weights of eq. 1 and 10-14."""

from __future__ import annotations

import healpy as hp
import numpy as np
import pytest
from scipy.integrate import quad

from dustmaps_ext_build.parametric.sightlines import (adaptive_sightlines, decentration_weight,
                                               from_nuniq, nuniq, resolution_deg,
                                               uncertainty_weights)


def _clustered_stars(seed=0, n=20000):
    """Stars in a few nside-64 pixels, with density varying by orders of magnitude."""
    rng = np.random.default_rng(seed)
    parents = np.array([100, 101, 102, 5000])
    # a steep density gradient inside the parents: nested sub-pixels drawn with power-law weights
    sub = np.floor(rng.power(0.3, n) * 256).astype(np.int64)  # nside 1024 children of nside 64
    return parents[rng.integers(0, parents.size, n)] * 256 + sub


def _bottom_up_reference(ipix, threshold, nside_max=1024, nside_min=64):
    """The paper's bottom-up merging, literally: leaves with too few stars absorb their siblings."""
    leaves = {}
    for p in ipix:
        leaves[(nside_max, int(p))] = leaves.get((nside_max, int(p)), 0) + 1
    nside = nside_max
    while nside > nside_min:
        # star count of every occupied pixel at this level, and whether it is still a leaf
        child_count, child_is_leaf = {}, {}
        for (ns, p), c in leaves.items():
            anc = p >> (2 * int(np.log2(ns // nside)))
            child_count[anc] = child_count.get(anc, 0) + c
            child_is_leaf[anc] = ns == nside
        merged = set()
        for parent in {p >> 2 for p in child_count}:
            for child in range(4 * parent, 4 * parent + 4):
                # an empty sibling, or a leaf below the threshold, merges the family
                if child not in child_count or (child_is_leaf[child]
                                                and child_count[child] < threshold):
                    merged.add(parent)
        new = {}
        for (ns, p), c in leaves.items():
            anc = p >> (2 * int(np.log2(ns // (nside // 2))))
            if anc in merged:
                new[(nside // 2, anc)] = new.get((nside // 2, anc), 0) + c
            else:
                new[(ns, p)] = c
        leaves = new
        nside //= 2
    return leaves


@pytest.mark.parametrize("threshold", [5, 20, 60])
def test_adaptive_sightlines_follow_the_bottom_up_rule(threshold):
    ipix = _clustered_stars()
    nside, pix, n = adaptive_sightlines(ipix, threshold=threshold)
    ref = _bottom_up_reference(ipix, threshold)
    assert dict(zip(zip(nside.tolist(), pix.tolist()), n.tolist())) == ref
    assert n.sum() == ipix.size  # a partition of the stars
    assert np.unique(nside).size >= 2  # the test exercises several levels
    # every sightline finer than nside 64 holds at least the threshold
    assert np.all(n[nside > 64] >= threshold)


def test_adaptive_sightlines_cover_the_occupied_sky_without_overlap():
    ipix = _clustered_stars(seed=1)
    nside, pix, _ = adaptive_sightlines(ipix, threshold=20)
    covered = np.concatenate([np.arange(p * (1024 // s) ** 2, (p + 1) * (1024 // s) ** 2)
                              for s, p in zip(nside, pix)])
    assert np.unique(covered).size == covered.size
    parents = np.unique(ipix >> 8)
    expected = np.concatenate([np.arange(p * 256, (p + 1) * 256) for p in parents])
    np.testing.assert_array_equal(np.sort(covered), expected)
    first = pix * (1024 // nside) ** 2
    assert np.all(np.diff(first) > 0)  # sorted along the NESTED curve


def test_adaptive_sightlines_input_checks():
    with pytest.raises(ValueError, match="power of two"):
        adaptive_sightlines([0], nside_max=1000)
    with pytest.raises(ValueError, match="out of range"):
        adaptive_sightlines([12 * 1024 ** 2])
    with pytest.raises(ValueError, match="threshold"):
        adaptive_sightlines([0], threshold=0)


def test_nuniq_round_trip_and_resolution():
    nside = np.array([64, 128, 1024, 1024])
    pix = np.array([0, 5, 12 * 1024 ** 2 - 1, 77])
    back_nside, back_pix = from_nuniq(nuniq(nside, pix))
    np.testing.assert_array_equal(back_nside, nside)
    np.testing.assert_array_equal(back_pix, pix)
    # the paper's Table 2 pixel scales: ~55' at nside 64, ~3.4' at nside 1024
    assert resolution_deg(64) * 60 == pytest.approx(55, abs=1)
    assert resolution_deg(1024) * 60 == pytest.approx(3.4, abs=0.1)
    assert resolution_deg(64) == pytest.approx(np.degrees(hp.nside2resol(64)))


def test_decentration_weight_balances_inside_and_outside_one_resolution():
    # the paper chose alpha = 7.5, beta = -5 so that the weight volumes of revolution inside
    # and outside the resolution limit are about equal (its Figure 10); the balance holds at
    # half a resolution from the centre, i.e. the limit is the pixel's half-width
    def w(t):
        return float(decentration_weight(t, 1.0))

    from scipy.optimize import brentq

    balance = brentq(lambda a: quad(lambda t: t * w(t), 0, a)[0]
                     - quad(lambda t: t * w(t), a, 3)[0], 0.1, 1.0)
    assert 0.45 < balance < 0.6
    assert quad(lambda t: t * w(t), 1, 3)[0] < 0.1 * quad(lambda t: t * w(t), 0, 1)[0]
    assert w(0.0) == pytest.approx(1 / (1 + np.exp(-5)))
    assert float(decentration_weight(2.0, 2.0)) == pytest.approx(1 / (1 + np.exp(2.5)))
    assert float(decentration_weight(1e4, 1.0)) == 0.0  # no overflow far away


def test_uncertainty_weights_limits():
    d = np.full(5, 2.0)
    # E(B-V) error 0.01 -> 1, 0.1 -> 0.1, clipped beyond; distance error 0.5% -> 1, 50% -> 0.1
    w = uncertainty_weights([0.01, 0.1, 0.005, 0.3, 0.01], d, d * 0.005, d * 0.005)
    np.testing.assert_allclose(w, [1.0, 0.1, 1.0, 0.1, 1.0])
    w = uncertainty_weights(np.full(4, 0.01), d[:4], d[:4] * [0.5, 0.9, 0.001, 0.4],
                            d[:4] * [0.5, 0.9, 0.009, 0.6])
    np.testing.assert_allclose(w, [0.1, 0.1, 1.0, 0.1])
    # in between: linear in 1/err^2 and in 1/relative error
    w = uncertainty_weights([0.02], [1.0], [0.05], [0.05])
    w_e = (1 / 0.02 ** 2 - 100) / (1e4 - 100) * 0.9 + 0.1
    w_d = (1 / 0.05 - 2) / (200 - 2) * 0.9 + 0.1
    assert w[0] == pytest.approx(w_e * w_d)
