"""The parametric model, its density and the eq. 15 loss gradient.

References: dustmaps3d 2.2.13's own evaluation of the released model (component4 /
derivative_of_component4), central finite differences, and analytic limits.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from dustmaps_ext_build.parametric.model import (
    N_PARAMS, PARAM_NAMES, cloud_centres, evaluate_density, evaluate_model, loss_and_gradient,
    model_jacobian)

with contextlib.redirect_stdout(io.StringIO()):
    from dustmaps3d import core as d3core

PARAMS = np.array([0.12, 0.15, 0.03, 0.2, 0.05, 0.3, 0.8, 0.1, 0.2, 1.5, 0.2, 0.1,
                   3.0, 0.3, 0.05])


def _dustmaps3d_args(p):
    # dustmaps3d orders the diffuse parameters (bubble, rho, h); ours are (bubble, h, rho)
    return (p[0], p[2], p[1], *p[3:])


def _random_params(rng):
    p = np.empty(N_PARAMS)
    p[0] = rng.uniform(0.05, 0.5)
    p[1] = rng.uniform(0.05, 0.5)
    p[2] = rng.uniform(0.0, 0.04)
    p[3::3] = rng.uniform(0.0, 4.0, 4)
    p[4::3] = rng.uniform(0.01, 1.0, 4)
    p[5::3] = rng.uniform(0.0, 1.0, 4)
    return p


@pytest.mark.parametrize("b_lim", [0.5, 3.0, -12.0, 45.0, 89.0])
def test_model_and_density_match_dustmaps3d(b_lim):
    rng = np.random.default_rng(7)
    x = np.concatenate([np.linspace(0.0, 8.0, 801) + 1e-4, [0.0, 15.0]])
    for p in [PARAMS] + [_random_params(rng) for _ in range(5)]:
        ours = evaluate_model(p, b_lim, x)
        ref = d3core.component4(x, b_lim, *_dustmaps3d_args(p))
        np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-13)
        dens = evaluate_density(p, b_lim, x)
        dref = d3core.derivative_of_component4(x, b_lim, *_dustmaps3d_args(p))
        np.testing.assert_allclose(dens, dref, rtol=1e-11, atol=1e-12)


def test_model_limits():
    x = np.array([0.0, 0.05, 200.0])
    e = evaluate_model(PARAMS, 30.0, x)
    assert abs(e[0]) < 1e-9  # passes through the origin
    assert abs(e[1]) < 1e-9  # nothing inside the bubble (wall at 0.12 kpc, 10 pc wide)
    # far away: every cloud column, plus the diffuse column T and the swept-up wall C0
    span0 = PARAMS[1] / np.sin(np.radians(30.0))
    total = span0 * PARAMS[2]
    c0 = total * (1 - np.exp(-PARAMS[0] / span0))
    assert e[2] == pytest.approx(PARAMS[5::3].sum() + total + c0, rel=1e-9)
    np.testing.assert_allclose(cloud_centres(PARAMS), PARAMS[3::3] + 2 * PARAMS[4::3] + PARAMS[0])


def test_jacobian_matches_finite_differences():
    rng = np.random.default_rng(11)
    x = np.sort(rng.uniform(0.02, 6.0, 300))
    for p in [PARAMS, _random_params(rng), _random_params(rng)]:
        jac = model_jacobian(p, 7.0, x)
        for i in range(N_PARAMS):
            step = 1e-6 * max(1.0, abs(p[i]))
            hi, lo = p.copy(), p.copy()
            hi[i] += step
            lo[i] -= step
            fd = (evaluate_model(hi, 7.0, x) - evaluate_model(lo, 7.0, x)) / (2 * step)
            # the [x >= bubble] switch is a kink in bubble; skip stars right at it
            ok = np.abs(x - p[0]) > 1e-4
            np.testing.assert_allclose(jac[ok, i], fd[ok], rtol=1e-5,
                                       atol=1e-6 * max(1.0, np.abs(fd).max()),
                                       err_msg=PARAM_NAMES[i])


def test_loss_gradient_matches_finite_differences():
    rng = np.random.default_rng(5)
    x = np.sort(rng.uniform(0.02, 6.0, 120))
    e = evaluate_model(PARAMS, 7.0, x) + rng.normal(0, 0.03, x.size)
    w = rng.uniform(0.1, 1.0, x.size)
    for p in [PARAMS, _random_params(rng)]:
        loss, grad = loss_and_gradient(p, 7.0, x, e, w, lam=0.1)
        resid = e - evaluate_model(p, 7.0, x)
        assert loss == pytest.approx(np.sum(w * np.abs(resid)) + 0.1 * p[5::3].sum(), rel=1e-12)
        for i in range(N_PARAMS):
            # a step small enough that no residual changes sign (the L1 kinks)
            step = 1e-7 * max(1.0, abs(p[i]))
            hi, lo = p.copy(), p.copy()
            hi[i] += step
            lo[i] -= step
            fd = (loss_and_gradient(hi, 7.0, x, e, w)[0]
                  - loss_and_gradient(lo, 7.0, x, e, w)[0]) / (2 * step)
            assert grad[i] == pytest.approx(fd, rel=1e-4, abs=1e-6), PARAM_NAMES[i]


@pytest.mark.parametrize("share_exp", [0.5, 1.0])
def test_share_weighted_penalty_and_its_gradient(share_exp):
    # penalty lam sum_k Cum_k F_k^a, F_k the weighted share of the stars behind cloud k:
    # F_k from the model itself (cloud k alone over the model without clouds, at unit
    # column), the gradient against finite differences
    rng = np.random.default_rng(7)
    x = np.sort(rng.uniform(0.02, 6.0, 150))
    e = evaluate_model(PARAMS, 7.0, x) + rng.normal(0, 0.03, x.size)
    w = rng.uniform(0.01, 1.0, x.size)
    for p in [PARAMS, _random_params(rng)]:
        loss, grad = loss_and_gradient(p, 7.0, x, e, w, lam=0.1, share_exp=share_exp)
        bare = p.copy()
        bare[5::3] = 0.0
        penalty = 0.0
        for k in range(4):
            one = bare.copy()
            one[5 + 3 * k] = 1.0
            rise = evaluate_model(one, 7.0, x) - evaluate_model(bare, 7.0, x)
            penalty += 0.1 * p[5 + 3 * k] * (np.sum(w * rise) / w.sum()) ** share_exp
        resid = e - evaluate_model(p, 7.0, x)
        assert loss == pytest.approx(np.sum(w * np.abs(resid)) + penalty, rel=1e-12)
        for i in range(N_PARAMS):
            step = 1e-7 * max(1.0, abs(p[i]))
            hi, lo = p.copy(), p.copy()
            hi[i] += step
            lo[i] -= step
            fd = (loss_and_gradient(hi, 7.0, x, e, w, lam=0.1, share_exp=share_exp)[0]
                  - loss_and_gradient(lo, 7.0, x, e, w, lam=0.1, share_exp=share_exp)[0]
                  ) / (2 * step)
            assert grad[i] == pytest.approx(fd, rel=1e-4, abs=1e-6), PARAM_NAMES[i]
    # a cloud in front of every star is penalised as in eq. 15, one behind every star not
    near_only = PARAMS.copy()
    near_only[8] = near_only[11] = near_only[14] = 0.0   # keep cloud 1 (centre 0.6 kpc)
    far = np.linspace(3.0, 6.0, 40)
    ef = evaluate_model(near_only, 7.0, far)
    assert loss_and_gradient(near_only, 7.0, far, ef, np.ones(40), lam=0.1,
                             share_exp=share_exp)[0] == pytest.approx(0.1 * near_only[5],
                                                                      rel=1e-6)
    close = np.linspace(0.05, 0.3, 40)
    ec = evaluate_model(near_only, 7.0, close)
    assert loss_and_gradient(near_only, 7.0, close, ec, np.ones(40), lam=0.1,
                             share_exp=share_exp)[0] < 1e-3 * near_only[5]


def test_share_exp_must_be_non_negative():
    with pytest.raises(ValueError, match="share_exp"):
        loss_and_gradient(PARAMS, 7.0, [1.0], [0.1], [1.0], share_exp=-1.0)


def test_loss_gradient_equals_the_weighted_jacobian_sum():
    # the loss kernel forms its gradient from weighted sums over the stars; it must equal
    # the star-by-star sum -sum_j sign(r_j) w_j J_j + lam sign(Cum) (the Jacobian is checked
    # against finite differences above), also for thousands of stars whose weights span
    # four decades and for stars inside the bubble
    rng = np.random.default_rng(23)
    x = np.sort(rng.uniform(0.01, 8.0, 4000))
    w = 10.0 ** rng.uniform(-4.0, 0.0, x.size)
    for b_lim in (2.0, 35.0):
        for p in [PARAMS, _random_params(rng), _random_params(rng)]:
            e = evaluate_model(p, b_lim, x) + rng.normal(0, 0.05, x.size)
            loss, grad = loss_and_gradient(p, b_lim, x, e, w, lam=0.05)
            sign = np.sign(e - evaluate_model(p, b_lim, x))
            expected = -(sign * w) @ model_jacobian(p, b_lim, x)
            expected[5::3] += 0.05 * np.sign(p[5::3])
            np.testing.assert_allclose(grad, expected, rtol=1e-9,
                                       atol=1e-12 * np.abs(expected).max())


def test_loss_gradient_at_zero_residual_uses_sign_zero():
    x = np.array([0.5, 1.0, 2.0])
    e = evaluate_model(PARAMS, 20.0, x)
    loss, grad = loss_and_gradient(PARAMS, 20.0, x, e, np.ones(3), lam=0.1)
    assert loss == pytest.approx(0.1 * PARAMS[5::3].sum(), abs=1e-15)
    expected = np.zeros(N_PARAMS)
    expected[5::3] = 0.1
    np.testing.assert_allclose(grad, expected, atol=1e-15)


@pytest.mark.parametrize("bad, match", [
    (np.ones(14), "shape"),
    (np.where(np.arange(N_PARAMS) == 1, 0.0, 0.1), "positive"),
    (np.where(np.arange(N_PARAMS) == 2, np.nan, 0.1), "finite"),
])
def test_bad_parameters_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        evaluate_model(bad, 10.0, [1.0])


def test_zero_latitude_is_refused():
    with pytest.raises(ValueError, match="b_lim"):
        evaluate_model(PARAMS, 0.0, [1.0])
    with pytest.raises(ValueError, match="finite"):
        evaluate_model(PARAMS, 10.0, [np.nan])


@pytest.mark.parametrize("b_lim", [0.5, -12.0, 45.0, 89.0])
def test_model_equals_the_evaluator(b_lim):
    """The build model and the end-user evaluator (float64 records derived by numpy from the
    same parameters) give the same E(B-V) and density, empty clouds included."""
    from dustmaps_ext._core.parametric import TABLE_COLUMNS, build_records, evaluate

    rng = np.random.default_rng(3)
    x = np.concatenate([np.linspace(0.0, 12.0, 1201), rng.uniform(0.0, 15.0, 300), [40.0]])
    for i in range(8):
        p = PARAMS.copy() if i == 0 else _random_params(rng)
        if i % 3 == 2:
            p[5 + 3 * rng.integers(0, 4)] = 0.0
        cols = {c: np.full(1, np.nan) for c in TABLE_COLUMNS}
        cols.update({name: np.array([v]) for name, v in zip(PARAM_NAMES, p)})
        cols["b_lim"] = np.array([b_lim])
        rec, aux = build_records(cols)
        assert rec.dtype == aux.dtype == np.float64
        res = evaluate((rec, aux), np.zeros(x.size, np.int64), x, components=True)
        np.testing.assert_allclose(evaluate_model(p, b_lim, x), res["ebv"], rtol=1e-12,
                                   atol=1e-15)
        np.testing.assert_allclose(evaluate_density(p, b_lim, x), res["density"], rtol=1e-12,
                                   atol=1e-15)
