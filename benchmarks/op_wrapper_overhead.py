"""Per-call cost of the public op wrapper (msdfast.ops) over the raw torch.ops call, checked on every call vs
validated once per loop (ops.checks_once, what the sampler loops use). Small cache-resident shapes, 1 thread,
variants interleaved round by round (msdfast.bench.harness.interleave); prints a markdown table.

    OMP_NUM_THREADS=1 python benchmarks/op_wrapper_overhead.py [--rounds 15] [--out FILE]
"""
from __future__ import annotations

import argparse

import torch

from msdfast import ops
from msdfast.bench.harness import emit_report, interleave, machine_line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    B = 2
    z, ec, eu, c = (torch.randn(B, 4, 64, 64) for _ in range(4))
    coef = ops.step_coefficients(B, 0.5, 0.8, 0.6, 0.7, guidance_scale=7.5)
    gcoef = ops.grad_coefficients(B, 0.5, guidance_scale=7.5)
    raw_step, raw_grad = torch.ops.msdfast.ddim_step.default, torch.ops.msdfast.distill_grad.default
    cases = {
        "ddim_step": (lambda: ops.ddim_step(z, ec, coef, eps_u=eu, center=c),
                      lambda: raw_step(z, ec, eu, coef, c, None, False)),
        "distill_grad": (lambda: ops.distill_grad(ec, z, gcoef, eps_u=eu, x=c, clip=1.0),
                         lambda: raw_grad(ec, z, eu, gcoef, c, 1.0)),
    }
    lines = [f"# Op wrapper overhead ({machine_line()})", "",
             f"`OMP_NUM_THREADS=1 python benchmarks/op_wrapper_overhead.py --rounds {a.rounds}`; 2x4x64x64 float32, "
             "cache-resident; best of the interleaved rounds, µs per call.", "",
             "| op | raw torch.ops (.default) | public, checked every call | public in ops.checks_once() "
             "| checked - raw | once - raw |", "|---|---:|---:|---:|---:|---:|"]
    n = 2000   # calls per timed block; a checks_once() block validates only the first of them

    def loop(fn, once: bool = False):  # noqa: ANN001, ANN202
        def run(_i: int) -> None:
            if once:
                with ops.checks_once():
                    for _ in range(n):
                        fn()
            else:
                for _ in range(n):
                    fn()
        return run

    for name, (public, raw) in cases.items():
        t = interleave({"raw": loop(raw), "checked": loop(public), "once": loop(public, once=True)}, a.rounds, 1)
        r, ch, on = (t[k].best / n for k in ("raw", "checked", "once"))
        lines.append(f"| {name} | {r * 1e6:.2f} | {ch * 1e6:.2f} | {on * 1e6:.2f} | {(ch - r) * 1e6:.2f} | "
                     f"{(on - r) * 1e6:.2f} |")
    emit_report("\n".join(lines) + "\n", a.out)


if __name__ == "__main__":
    main()
