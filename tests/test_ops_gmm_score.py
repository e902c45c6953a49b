"""msdfast.ops.gmm_score (2D Gaussian mixture at noise level s, streaming log-sum-exp): backends vs
reference, closed-form oracles (one component; autograd of log p), thin float64 components, opcheck."""
from __future__ import annotations


import pytest
import torch

import msdfast.ops as O
from kernel_helpers import DEVICES, FAST, need, noncontiguous as noncontig, opcheck


def _mixture(K, dtype, device, seed=0, scale=0.3, jitter=1e-3):
    g = torch.Generator().manual_seed(seed)
    w = (torch.rand(K, generator=g) + 0.1).to(dtype)
    mu = torch.randn(K, 2, generator=g).to(dtype)
    A = (torch.randn(K, 2, 2, generator=g) * scale).to(dtype)
    cov = A @ A.transpose(1, 2) + jitter * torch.eye(2, dtype=dtype)
    return w.to(device), mu.to(device), cov.to(device)


TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.float64: dict(rtol=1e-10, atol=1e-10)}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("M,K", [(40, 7), (3, 1), (129, 70)])
@pytest.mark.parametrize("s_mode", ["per-query", "shared", "mixed"])
def test_matches_reference(device, backend, dtype, M, K, s_mode):
    """s per query, one s for all (the CPU kernel's precomputed-inverse path) and runs of shared s."""
    need("gmm_score", backend, device)
    w, mu, cov = _mixture(K, dtype, device)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(M, 2, generator=g).to(device=device, dtype=dtype)
    s = torch.rand(M, generator=g) * 0.3
    if s_mode == "shared":
        s = s[:1].expand(M).clone()
    elif s_mode == "mixed":   # two levels in runs of 70: chunks of one level and chunks that straddle both
        s = torch.where(torch.arange(M) // 70 % 2 == 0, s[0], s[1])
    s = s.to(device)
    sc, lp = O.gmm_score(x, w, mu, cov, s, backend=backend)
    rsc, rlp = O.gmm_score(x, w, mu, cov, s, backend="reference")
    assert sc.dtype == dtype and lp.shape == (M,)
    torch.testing.assert_close(sc, rsc, **TOL[dtype])
    torch.testing.assert_close(lp, rlp, **TOL[dtype])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ("reference",) + FAST)
def test_oracles(device, backend):
    """One component: log p is MultivariateNormal(mu, S + s^2 I).log_prob and the score -(C^-1)(x - mu);
    a mixture: the score equals autograd's gradient of the returned log p."""
    need("gmm_score", backend, device)
    dt = torch.float64
    w, mu, cov = _mixture(1, dt, device, seed=2)
    x = torch.randn(6, 2, dtype=dt, device=device)
    s = torch.full((6,), 0.2, dtype=dt, device=device)
    sc, lp = O.gmm_score(x, w, mu, cov, s, backend=backend)
    C = cov[0] + 0.04 * torch.eye(2, dtype=dt, device=device)
    mvn = torch.distributions.MultivariateNormal(mu[0], covariance_matrix=C)
    torch.testing.assert_close(lp, mvn.log_prob(x))
    torch.testing.assert_close(sc, -(x - mu[0]) @ torch.linalg.inv(C).T)

    w, mu, cov = _mixture(5, dt, device, seed=3)
    xr = x.clone().requires_grad_(True)
    _, lp_ref = O.gmm_score(xr, w, mu, cov, s, backend="reference")
    (grad,) = torch.autograd.grad(lp_ref.sum(), xr)
    sc, lp = O.gmm_score(x, w, mu, cov, s, backend=backend)
    torch.testing.assert_close(sc, grad)
    torch.testing.assert_close(lp, lp_ref.detach())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", FAST)
def test_thin_components_float64(device, backend):
    """Tree-toy regime: variances 1e-8 and points far off the components. Densities underflow (exp(-1e9)),
    but log p and the score stay finite and agree with the reference in float64."""
    need("gmm_score", backend, device)
    dt = torch.float64
    w, mu, cov = _mixture(12, dt, device, seed=4, scale=1e-4, jitter=1e-8)
    x = torch.randn(20, 2, dtype=dt, device=device) * 3
    s = torch.zeros(20, dtype=dt, device=device)
    s[10:] = 1e-3
    sc, lp = O.gmm_score(x, w, mu, cov, s, backend=backend)
    rsc, rlp = O.gmm_score(x, w, mu, cov, s, backend="reference")
    assert torch.isfinite(sc).all() and torch.isfinite(lp).all()
    assert (lp < -1e3).any()  # truly far in the tail
    torch.testing.assert_close(lp, rlp, rtol=1e-10, atol=1e-6)
    torch.testing.assert_close(sc, rsc, rtol=1e-8, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", FAST)
def test_zero_weight_components_and_noncontiguous(device, backend):
    need("gmm_score", backend, device)
    w, mu, cov = _mixture(6, torch.float64, device, seed=5)
    w[0] = 0.0
    w[3] = 0.0
    x = torch.randn(8, 2, dtype=torch.float64, device=device)
    out = O.gmm_score(noncontig(x), w, mu, cov, 0.1, backend=backend)
    ref = O.gmm_score(x, w, mu, cov, 0.1, backend="reference")
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("backend", FAST)
def test_opcheck(backend):
    need("gmm_score", backend, "cpu")
    w, mu, cov = _mixture(4, torch.float32, "cpu")
    x = torch.randn(10, 2)
    opcheck("gmm_score", backend, (x, w, mu, cov, torch.rand(10)))


def test_errors_name_the_argument():
    w, mu, cov = _mixture(3, torch.float32, "cpu")
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="x"):
        O.gmm_score(torch.randn(4, 3), w, mu, cov)
    with pytest.raises(ValueError, match="means"):
        O.gmm_score(x, w, mu[:2], cov)
    with pytest.raises(ValueError, match="covs"):
        O.gmm_score(x, w, mu, cov[:, :1])
    with pytest.raises(ValueError, match="s"):
        O.gmm_score(x, w, mu, cov, -1.0)
    if "compiled" in O._dispatch.available("gmm_score", "cpu"):
        with pytest.raises(RuntimeError, match="weights: dtype"):
            torch.ops.msdfast.gmm_score(x, w.double(), mu, cov, torch.rand(4))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ("reference",) + FAST)
def test_float64_keeps_the_noise_level_in_float64(device, backend):
    """s = 0.1 + 1e-12 is not a float32: a float64 call must use it as given (issue 18 item 5: s was rounded
    to float32, which moves the tree's logp by ~1e-4)."""
    need("gmm_score", backend, device)
    w, mu, cov = _mixture(5, torch.float64, device, seed=7, scale=0.01, jitter=1e-6)
    x = mu[:3] + 1e-3
    s = torch.full((3,), 0.1 + 1e-12, dtype=torch.float64, device=device)
    assert s.float().double()[0] != s[0]
    score, logp = O.gmm_score(x, w, mu, cov, s, backend=backend)
    want_score, want_logp = O.reference.gmm_score(x, w, mu, cov, s)
    torch.testing.assert_close(logp, want_logp, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(score, want_score, rtol=1e-12, atol=1e-12)
    # the same number as a python float
    torch.testing.assert_close(O.gmm_score(x, w, mu, cov, 0.1 + 1e-12, backend=backend)[1], want_logp,
                               rtol=1e-12, atol=1e-12)


def test_reference_computes_half_inputs_in_float32():
    """reference.gmm_score defines "correct" for every dtype: half inputs are computed in float32 and rounded
    once (in float16, |C|^-1 of thin components overflows and the log-sum-exp loses all precision)."""
    w, mu, cov = _mixture(6, torch.float32, "cpu", seed=3, scale=0.02, jitter=1e-4)
    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(1)) * 0.5
    s = torch.full((20,), 0.01)
    for half in (torch.float16, torch.bfloat16):
        xh = x.to(half)
        score, logp = O.reference.gmm_score(xh, w.to(half), mu.to(half), cov.to(half), s.to(half))
        assert score.dtype == half and logp.dtype == half
        want_s, want_l = O.reference.gmm_score(xh.float(), w.to(half).float(), mu.to(half).float(),
                                               cov.to(half).float(), s.to(half).float())
        torch.testing.assert_close(score, want_s.to(half), rtol=0, atol=0)
        torch.testing.assert_close(logp, want_l.to(half), rtol=0, atol=0)
