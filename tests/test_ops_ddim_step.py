"""msdfast.ops.ddim_step: every backend vs the plain-PyTorch reference, the reference vs closed forms
(DDPM posterior) and vs diffusers' DDIMScheduler, opcheck, torch.compile and argument errors."""
from __future__ import annotations

import itertools

import pytest
import torch
from ops_helpers import DTYPES, TOL, backend_params, noncontiguous

import msdfast
from msdfast import ops
from msdfast.ops import _dispatch, _triton
from msdfast.schedule import VPSchedule, psr_factor

SCH = VPSchedule.stable_diffusion()
SHAPES = [(3, 5, 7), (2, 4, 9, 11), (1, 3), (5, 3, 61, 67)]  # the last spans OpenMP chunks mid-sample
FLAGS = {  # (eps_u, center, noise, return_x0)
    "plain": (False, False, False, False),
    "cfg_x0": (True, False, False, True),
    "center_noise": (False, True, True, False),
    "all": (True, True, True, True),
}


def _cases() -> list:
    """(device, backend) pairs; cuda ones skip without a GPU, unavailable backends skip with the reason."""
    out = []
    for dev in ("cpu", "cuda"):
        for p in backend_params("ddim_step", dev):
            b = p.values[0]
            marks = list(p.marks)
            if dev == "cuda" and not torch.cuda.is_available():
                marks = [pytest.mark.skip(reason="needs a CUDA GPU")]
            out.append(pytest.param(dev, b, id=f"{dev}-{b}", marks=marks))
    return out


CASES = _cases()


def coef_table(batch: int, *, eta: float = 0.0, per_sample: bool = True, device: str = "cpu") -> torch.Tensor:
    """A [B, 8] table of genuinely different per-sample steps (t, guidance, PSR, decay), or one [1, 8] row."""
    n = batch if per_sample else 1
    t = torch.tensor([981, 501, 41, 1, 761, 261][:n] * (1 + n // 6))[:n]
    tn = torch.where(t - 20 < 0, torch.full_like(t, -1), t - 20)
    w = torch.tensor([7.5, 1.0, 3.0, 0.0, 12.0, 5.0] * (1 + n // 6))[:n]
    decay = torch.tensor([0.9, 0.5, 1.0, 0.25, 0.75, 0.1] * (1 + n // 6))[:n]
    return ops.step_coefficients(n, SCH.alpha(t), SCH.sigma(t), SCH.alpha(tn), SCH.sigma(tn), guidance_scale=w,
                                 psr=psr_factor(SCH.snr(t), 0.9), eta=eta, decay=decay, device=device)


def make_inputs(shape, dtype, flags, device="cpu", eta=0.0, per_sample=True):
    g = torch.Generator().manual_seed(hash((shape, str(dtype))) % 2**31)
    rnd = lambda: torch.randn(shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)  # noqa: E731
    has_u, has_c, has_n, x0 = flags
    z, eps_c = rnd(), rnd()
    kw = dict(eps_u=rnd() if has_u else None, center=rnd() if has_c else None, noise=rnd() if has_n else None,
              return_x0=x0)
    return z, eps_c, coef_table(shape[0], eta=eta if has_n else 0.0, per_sample=per_sample, device=device), kw


def _assert_matches(out, ref, dtype, x0: bool) -> None:
    if x0:
        torch.testing.assert_close(out[0], ref[0], **TOL[dtype])
        torch.testing.assert_close(out[1], ref[1], **TOL[dtype])
    else:
        torch.testing.assert_close(out, ref, **TOL[dtype])


# ------------------------------------------------------------------------------------------ vs reference
@pytest.mark.parametrize("flags", list(FLAGS.values()), ids=list(FLAGS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("device,backend", CASES)
def test_matches_reference(device, backend, dtype, shape, flags):
    if backend == "triton" and device == "cpu" and shape == SHAPES[-1] and dtype != torch.float32:
        pytest.skip("Triton interpreter is slow: float32 covers its multi-block path; other dtypes use small shapes")
    z, eps_c, coef, kw = make_inputs(shape, dtype, flags, device, eta=0.7)
    ref = ops.ddim_step(z, eps_c, coef, backend="reference", **kw)
    out = ops.ddim_step(z, eps_c, coef, backend=backend, **kw)
    outs = out if kw["return_x0"] else (out,)
    assert all(o.dtype == dtype and o.shape == z.shape and o.is_contiguous() for o in outs)
    _assert_matches(out, ref, dtype, kw["return_x0"])


@pytest.mark.parametrize("device,backend", CASES)
def test_broadcast_row_and_noncontiguous(device, backend):
    """A [1, 8] table broadcasts; non-contiguous inputs (transposed storage, strided coef) give the same result,
    through the public API and through the raw op (which must handle strides itself)."""
    shape, dtype = (4, 3, 6, 5), torch.float32
    z, eps_c, coef1, kw = make_inputs(shape, dtype, FLAGS["all"], device, eta=0.5, per_sample=False)
    ref = ops.ddim_step(z, eps_c, coef1, backend="reference", **kw)
    expanded = ops.ddim_step(z, eps_c, coef1.expand(4, -1).contiguous(), backend=backend, **kw)
    _assert_matches(expanded, ref, dtype, True)

    nc = {k: noncontiguous(v) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
    coef_nc = torch.cat([coef1, coef1], dim=1).expand(4, -1)[:, :8]  # stride (0, 1): 4 rows, 8 of 16 columns
    assert not coef_nc.is_contiguous()
    out = ops.ddim_step(noncontiguous(z), noncontiguous(eps_c), coef_nc, backend=backend, **nc)
    _assert_matches(out, ref, dtype, True)

    raw = torch.ops.msdfast.ddim_step if backend == "compiled" else _triton.OPS["ddim_step"]
    out = raw(noncontiguous(z), noncontiguous(eps_c), nc["eps_u"], coef_nc, nc["center"], nc["noise"], True)
    _assert_matches(tuple(out), ref, dtype, True)


@pytest.mark.parametrize("device,backend", CASES)
def test_per_sample_rows_are_independent(device, backend):
    """Row b of the table drives sample b only: the batched call equals B single-sample calls (exactly)."""
    z, eps_c, coef, kw = make_inputs((5, 2, 7, 3), torch.float32, FLAGS["all"], device, eta=1.0)
    batched = ops.ddim_step(z, eps_c, coef, backend=backend, **kw)
    for b in range(5):
        one = {k: v[b:b + 1] if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
        single = ops.ddim_step(z[b:b + 1], eps_c[b:b + 1], coef[b:b + 1], backend=backend, **one)
        torch.testing.assert_close(batched[0][b:b + 1], single[0], rtol=0, atol=0)
        torch.testing.assert_close(batched[1][b:b + 1], single[1], rtol=0, atol=0)
    # and the rows really differ, so the check above could fail
    assert coef[:, 2].unique().numel() == 5


def test_reference_formula_by_hand():
    """The reference itself against the equations written out (CFG + PSR + Tweedie + DDIM + kernel pull)."""
    z, ec, eu, c, n = torch.randn(5, 2, 3, 4, dtype=torch.float64).unbind(0)
    z, ec, eu, c, n = (t.reshape(2, 12) for t in (z, ec, eu, c, n))
    w, r, a, s, an, ce, cn, dec = 7.5, 0.8, 0.6, 0.8, 0.9, 0.3, 0.2, 0.7
    coef = torch.tensor([[w, r, a, s, an, ce, cn, dec]], dtype=torch.float32)
    cf = coef[0].double().tolist()
    eps = cf[1] * (eu + cf[0] * (ec - eu))
    x0 = (z - cf[3] * eps) / cf[2]
    want = c + (cf[4] * x0 + cf[5] * eps + cf[6] * n - c) * cf[7]
    out, x0_out = ops.ddim_step(z, ec, coef, eps_u=eu, center=c, noise=n, return_x0=True, backend="reference")
    torch.testing.assert_close(out, want, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(x0_out, x0, rtol=1e-14, atol=1e-14)


# ------------------------------------------------------------------------------------------ closed forms
def _all_backends_cpu() -> list[str]:
    return _dispatch.available("ddim_step", "cpu")


@pytest.mark.parametrize("backend", _all_backends_cpu())
def test_eta_one_is_ddpm_posterior(backend):
    """eta = 1 with t' = t - 1 is ancestral DDPM: z' = mu_tilde(z, x0) + sqrt(beta_tilde) noise (Ho et al. 2020,
    eq. 6-7), with x0 = (z - sigma eps)/alpha. Per-sample t."""
    t = torch.tensor([900, 400, 50, 1])
    tn = t - 1
    ab, abn = SCH.alpha_bar(t, dtype=torch.float64), SCH.alpha_bar(tn, dtype=torch.float64)
    beta = 1 - ab / abn
    z, eps, noise = torch.randn(3, 4, 6, dtype=torch.float64).unbind(0)
    coef = ops.step_coefficients(4, SCH.alpha(t), SCH.sigma(t), SCH.alpha(tn), SCH.sigma(tn), eta=1.0)
    out = ops.ddim_step(z, eps, coef, noise=noise, backend=backend)
    x0 = (z - (1 - ab).sqrt()[:, None] * eps) / ab.sqrt()[:, None]
    mean = (abn.sqrt() * beta / (1 - ab))[:, None] * x0 + ((1 - beta).sqrt() * (1 - abn) / (1 - ab))[:, None] * z
    var = beta * (1 - abn) / (1 - ab)
    # coefficients travel as float32, hence the float32-level tolerance on float64 data
    torch.testing.assert_close(out, mean + var.sqrt()[:, None] * noise, rtol=2e-5, atol=2e-5)


def _diffusers_ddim():
    diffusers = pytest.importorskip("diffusers")
    return diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                   set_alpha_to_one=False, steps_offset=1, clip_sample=False,
                                   timestep_spacing="leading", num_train_timesteps=1000)


@pytest.mark.parametrize("backend", _all_backends_cpu())
@pytest.mark.parametrize("eta", [0.0, 0.6])
def test_matches_diffusers_ddim_scheduler(backend, eta):
    """Ten DDIM steps with our schedule + step_coefficients + ddim_step equal diffusers' DDIMScheduler.step
    (same eps model, same variance noise) -- a cross-check of the timestep grid, the final alpha and eq. 12/16
    of Song et al. 2021."""
    sched = _diffusers_ddim()
    n = 10
    sched.set_timesteps(n)
    pairs = SCH.sampling_pairs(n, spacing="leading")
    assert [p[0] for p in pairs] == sched.timesteps.tolist()
    g = torch.Generator().manual_seed(1)
    z_ours = z_ref = torch.randn(2, 4, 5, 6, generator=g)
    model = lambda z, t: 0.6 * torch.tanh(z) + 0.01 * (t / 100.0) * z  # noqa: E731  a smooth fake eps model
    for t, tn in pairs:
        noise = torch.randn(z_ref.shape, generator=g)
        z_ref = sched.step(model(z_ref, t), t, z_ref, eta=eta, variance_noise=noise).prev_sample
        coef = ops.step_coefficients(2, SCH.alpha(t), SCH.sigma(t), SCH.alpha(tn), SCH.sigma(tn), eta=eta)
        z_ours = ops.ddim_step(z_ours, model(z_ours, t), coef, noise=noise if eta > 0 else None, backend=backend)
        torch.testing.assert_close(z_ours, z_ref, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------ torch.library
def _opcheck_args(device: str = "cpu") -> list[tuple]:
    out = []
    for name, dtype in (("plain", torch.float32), ("all", torch.bfloat16), ("cfg_x0", torch.float32)):
        z, eps_c, coef, kw = make_inputs((2, 3, 5), dtype, FLAGS[name], device, eta=0.3)
        out.append((z, eps_c, kw["eps_u"], coef, kw["center"], kw["noise"], kw["return_x0"]))
    return out


@pytest.mark.parametrize("backend", backend_params("ddim_step"))
def test_opcheck(backend):
    op = torch.ops.msdfast.ddim_step.default if backend == "compiled" else _triton.OPS["ddim_step"]
    for args in _opcheck_args():
        torch.library.opcheck(op, args)


@pytest.mark.parametrize("backend", backend_params("ddim_step"))
def test_torch_compile_fullgraph(backend):
    """The public op inside a torch.compile(fullgraph=True) region (aot_eager: dynamo + fake tensors + AOT,
    without inductor's C++ compile, to stay fast on a 2-core CI)."""
    torch._dynamo.reset()
    z, eps_c, coef, kw = make_inputs((2, 3, 5), torch.float32, FLAGS["all"], eta=0.3)

    def step(z, eps_c, eps_u, center, noise):
        out, x0 = ops.ddim_step(z, eps_c, coef, eps_u=eps_u, center=center, noise=noise, return_x0=True,
                                backend=backend)
        return out * 2 + x0

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    got = compiled(z, eps_c, kw["eps_u"], kw["center"], kw["noise"])
    want = step(z, eps_c, kw["eps_u"], kw["center"], kw["noise"])
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.slow  # ~20 s on 2 cores: inductor generates and compiles C++ for the surrounding pointwise ops
def test_torch_compile_inductor_compiled_op():
    """The full default torch.compile (inductor) around the compiled op: fake kernel, graph and result."""
    if "compiled" not in _dispatch.available("ddim_step", "cpu"):
        pytest.skip("compiled backend unavailable")
    torch._dynamo.reset()
    z, eps_c, coef, kw = make_inputs((2, 3, 5), torch.float32, FLAGS["all"], eta=0.3)

    def step(z, eps_c, eps_u, center, noise):
        out, x0 = ops.ddim_step(z, eps_c, coef, eps_u=eps_u, center=center, noise=noise, return_x0=True,
                                backend="compiled")
        return out * 2 + x0

    got = torch.compile(step, fullgraph=True)(z, eps_c, kw["eps_u"], kw["center"], kw["noise"])
    torch.testing.assert_close(got, step(z, eps_c, kw["eps_u"], kw["center"], kw["noise"]), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------ edge cases
@pytest.mark.parametrize("backend", backend_params("ddim_step"))
def test_nan_propagates_and_empty(backend):
    """NaN stays local (no -ffast-math), and empty samples are fine."""
    z, eps_c, coef, kw = make_inputs((2, 3, 4), torch.float32, FLAGS["all"], eta=0.3)
    z[1, 2, 3] = float("nan")
    out, x0 = ops.ddim_step(z, eps_c, coef, backend=backend, **kw)
    assert torch.isnan(out[1, 2, 3]) and torch.isnan(x0[1, 2, 3])
    assert torch.isfinite(out).sum() == out.numel() - 1
    e = torch.empty(2, 0)
    assert ops.ddim_step(e, e, coef, backend=backend).shape == (2, 0)


def test_default_backend_is_compiled_when_built():
    if not msdfast._backend.has_compiled():
        pytest.skip("msdfast._C not built")
    assert _dispatch.choose("ddim_step", "cpu") == "compiled"


# ------------------------------------------------------------------------------------------ errors
def test_errors_name_the_argument():
    z = torch.randn(2, 3)
    coef = coef_table(2)
    with pytest.raises(ValueError, match="eps_c"):
        ops.ddim_step(z, torch.randn(2, 4), coef)
    with pytest.raises(TypeError, match="eps_u"):
        ops.ddim_step(z, z, coef, eps_u=z.double())
    with pytest.raises(ValueError, match="center"):
        ops.ddim_step(z, z, coef, center=torch.empty(2, 3, device="meta"))
    with pytest.raises(ValueError, match="noise"):
        ops.ddim_step(z, z, coef, noise=torch.randn(3, 3))
    with pytest.raises(ValueError, match="coef"):
        ops.ddim_step(z, z, coef_table(3))
    with pytest.raises(ValueError, match="coef"):
        ops.ddim_step(z, z, coef[:, :7])
    with pytest.raises(TypeError, match="z"):
        ops.ddim_step(z.long(), z, coef)
    with pytest.raises(ValueError, match="alpha_t"):
        ops.step_coefficients(2, 0.0, 1.0, 0.5, 0.5)
    with pytest.raises(ValueError, match="backend: unknown 'bogus'"):
        ops.ddim_step(z, z, coef, backend="bogus")


@pytest.mark.skipif(not msdfast._backend.has_compiled(), reason="msdfast._C not built")
def test_compiled_op_checks_its_arguments():
    """torch.ops.msdfast.ddim_step can be called directly, so the C++ side names bad arguments too."""
    op = torch.ops.msdfast.ddim_step
    z, coef = torch.randn(2, 3), coef_table(2)
    with pytest.raises(RuntimeError, match="noise: shape"):
        op(z, z, None, coef, None, torch.randn(2, 4), False)
    with pytest.raises(RuntimeError, match="eps_u: dtype"):
        op(z, z, z.half(), coef, None, None, False)
    with pytest.raises(RuntimeError, match="coef: expected float32"):
        op(z, z, None, coef.double(), None, None, False)
    with pytest.raises(RuntimeError, match=r"coef: expected a \[2 or 1, 8\]"):
        op(z, z, None, coef_table(3), None, None, False)
    with pytest.raises(RuntimeError, match="z: expected float"):
        op(z.int(), z.int(), None, coef, None, None, False)


def test_all_flag_combinations_compiled_cpu():
    """Every one of the 16 compiled variants (optional inputs x return_x0) once, fp32."""
    if "compiled" not in _dispatch.available("ddim_step", "cpu"):
        pytest.skip("compiled backend unavailable")
    for flags in itertools.product([False, True], repeat=4):
        z, eps_c, coef, kw = make_inputs((3, 17), torch.float32, flags, eta=0.4)
        _assert_matches(ops.ddim_step(z, eps_c, coef, backend="compiled", **kw),
                        ops.ddim_step(z, eps_c, coef, backend="reference", **kw), torch.float32, flags[3])
