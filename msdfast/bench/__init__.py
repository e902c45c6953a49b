"""`msdfast bench kernels`: every fused op against its plain-PyTorch reference, eager and compiled by inductor,
timed in one process with interleaved variants, against the machine's measured memory bandwidth.

Per op and size, two data regimes:
  dram   each call reads a different input set, cycling over sets that total >= 4x the last-level cache, so the
         data comes from DRAM (what a solver loop over large latents sees);
  cache  each call cycles over 4 sets (small sizes fit in cache together: the warm case).
Variants (msdfast.bench.cases): `reference` (the eager reference), `kernel` (msdfast.ops, the public call as a
sampler loop makes it: inside ops.checks_once(), arguments validated at the first call, then dispatch + fused
kernel), `raw` (torch.ops.msdfast.<op>.default alone), `inductor` (torch.compile of the SAME reference, one
compiled call per op) and `inductor-graph` (torch.compile of 4 reference calls on 4 input sets in ONE graph, time
per op: inductor amortised inside a larger compiled region).

% of bound (dram rows of memory-bound ops) = (the op's bytes / the row's bound) / the kernel's best time. The
row's bound is the faster of
  * the machine's STREAM rates (msdfast.bench.harness: Read, Copy, Triad over 4x the last-level cache, best of 10
    at start and end), and
  * `mix`: msdfast_bench::stream_mix (csrc/bench_stream.cpp), a one-pass kernel that reads the very arrays the
    op reads (cases.Case.reads: the op's own input sets, in the op's cycle) and writes as many fresh arrays as the
    op writes, with no arithmetic; best of the row's own interleaved rounds, 3 blocks per round.
Why the mix: a single-stream Read or Copy/Triad is not a bound for every op. A read-heavy op (chain_mean_shift
reads 5 streams, writes 1) keeps more loads in flight than one Read stream, and an op's freshly allocated outputs
reuse the memory the previous call freed, still in cache, so its writes cost no DRAM read-for-ownership -- both
let an op move its bytes faster than Copy/Triad (distill_grad 16x4x128x128 read 103% of the STREAM bound). The
mix kernel has both advantages and does strictly less work than the op over the same memory traffic, so
% <= 100% up to the timing noise of two best-of-N measurements.
The CPU share column is the process's CPU time over wall x threads of the kernel's blocks (< ~0.8: other
processes held the cores; the row was contended).

Needs no source checkout (the cases and the table live in the package); inductor needs a C++ compiler.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch

from .. import ops
from ..errors import UserInputError
from .cases import OPS, Case, build_cases
from .harness import Samples, interleave, llc_bytes, machine, stream_bandwidth

__all__ = ["add_bench_arguments", "run_bench", "run_cases", "table", "stream_mix_op", "SUITES"]

SUITES = ("kernels",)
GRAPH_SETS = 4          # input sets per compiled graph (inductor-graph) and in the cache regime
MAX_SETS = 1024         # dram regime: at most this many input sets (tiny sizes cannot leave the cache anyway)
BLOCK_SECONDS = 0.02    # wall time of one timed block (calls per block chosen from a warm-up call)
MIX_BLOCKS = 3          # timed blocks per round of the bound kernel ("mix")


def _per_block_calls(fn: Any) -> int:
    """Calls of fn(i) per timed block: about BLOCK_SECONDS of work, from one timed (post-warm-up) call. Each
    variant gets its own count, so a fast kernel's block averages many calls instead of the reference's one."""
    import time

    t0 = time.perf_counter()
    fn(0)
    dt = time.perf_counter() - t0
    return max(1, min(500, int(BLOCK_SECONDS / max(dt, 1e-7))))


def _verify(case: Case) -> None:
    a = case.make(0)
    k = case.call(case.kernel, a)
    r = case.call(case.reference, a)
    if case.check is not None:
        case.check(k, r)
    else:
        first = lambda o: o[0] if isinstance(o, (tuple, list)) else o  # noqa: E731
        torch.testing.assert_close(first(k), first(r), rtol=case.tol, atol=case.tol)


def stream_mix_op() -> Any:
    """msdfast_bench::stream_mix (csrc/bench_stream.cpp) when the loaded extension has it, else None."""
    from .. import _backend

    if not _backend.has_compiled():
        return None
    try:
        return torch.ops.msdfast_bench.stream_mix.default
    except (AttributeError, RuntimeError):
        return None


def run_case(case: Case, mode: str, rounds: int, inductor: bool) -> dict[str, Any]:
    """Time every variant of one case in one data regime; returns a JSON-able row."""
    set_bytes = sum(t.numel() * t.element_size() for t in case.make(0) if isinstance(t, torch.Tensor))
    n_sets = GRAPH_SETS
    if mode == "dram":
        n_sets = min(MAX_SETS, max(GRAPH_SETS, math.ceil(4 * llc_bytes() / max(set_bytes, 1))))
        n_sets = -(-n_sets // GRAPH_SETS) * GRAPH_SETS
    sets = [case.make(s) for s in range(n_sets)]
    torch._dynamo.reset()   # each case compiles afresh (no recompile limit shared across cases)
    # ONE position in the cycle of input sets, shared by all variants: consecutive calls of any variant read
    # consecutive sets, so in the dram regime no call finds its inputs left in cache by the previous one.
    pos = [0]

    def next_index() -> int:
        pos[0] += 1
        return pos[0] % n_sets

    def next_set() -> tuple:
        return sets[next_index()]

    fns: dict[str, tuple[Any, int]] = {}   # name -> (fn(i), ops per call)
    fns["reference"] = (lambda _i: case.call(case.reference, next_set()), 1)
    fns["kernel"] = (lambda _i: case.call(case.kernel, next_set()), 1)
    if case.raw is not None:
        fns["raw"] = (lambda _i: case.call(case.raw, next_set()), 1)
    notes: list[str] = []
    if inductor:
        single = torch.compile(case.reference, dynamic=False)
        fns["inductor"] = (lambda _i: case.call(single, next_set()), 1)
        if case.post is None:
            k = len(sets[0])
            ref = case.reference

            def graph_fn(*flat: Any) -> tuple:
                return tuple(ref(*flat[j * k:(j + 1) * k]) for j in range(GRAPH_SETS))

            graph = torch.compile(graph_fn, dynamic=False)
            groups = [tuple(x for s in sets[g:g + GRAPH_SETS] for x in s) for g in range(0, n_sets, GRAPH_SETS)]

            def graph_call(_i: int) -> Any:
                g = (pos[0] // GRAPH_SETS + 1) % len(groups)
                pos[0] = (g + 1) * GRAPH_SETS - 1
                return graph(*groups[g])

            fns["inductor-graph"] = (graph_call, GRAPH_SETS)
        else:
            notes.append("inductor-graph: - (a backward per call)")
    traffic = case.traffic(sets[0])
    if mode == "dram" and traffic is not None:
        # The bound kernel: msdfast_bench::stream_mix reading the arrays the op reads, from the op's own input sets
        # in the same cycle, writing as many fresh arrays as the op writes. Timed in MIX_BLOCKS blocks per round
        # (the others: one): the bound is the machine's best rate for this traffic, searched for harder than the
        # kernel's time, as STREAM takes the best of 10.
        mix = stream_mix_op()
        if mix is None:
            notes.append("mix: msdfast_bench::stream_mix not built (an extension older than csrc/bench_stream.cpp); "
                         "bound = STREAM only")
        else:
            arrays = [case.traffic(x)[0] for x in sets]
            for j in range(MIX_BLOCKS):
                fns[f"mix.{j}"] = (lambda _i: mix(arrays[next_index()], case.writes), 1)
    for name in list(fns):   # warm up (compiles here); a variant that cannot run is reported, not timed
        try:
            fns[name][0](0)
        except Exception as exc:  # noqa: BLE001 -- e.g. inductor without a C++ compiler
            notes.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}")
            del fns[name]
    with ops.checks_once():   # `kernel` as a sampler loop calls it (its warm-up call above was fully checked)
        calls = {k: _per_block_calls(v[0]) for k, v in fns.items()}
        timed = interleave({k: v[0] for k, v in fns.items()}, rounds, calls)
    mix = [timed.pop(k) for k in list(timed) if k.startswith("mix.")]
    if mix:
        timed["mix"] = Samples([t for m in mix for t in m.times], [c for m in mix for c in m.cpu_share])
        fns["mix"] = (None, 1)
    row: dict[str, Any] = {"op": case.op, "size": case.label, "mode": mode,
                           "bytes": None if traffic is None else traffic[1], "sets": n_sets,
                           "calls_per_block": calls, "rounds": rounds, "notes": notes}
    for name, s in timed.items():
        per = fns[name][1]
        row[name] = {"median": s.median / per, "best": s.best / per, "cpu_share": s.share}
    return row


def run_cases(op_names: list[str] | tuple[str, ...] = OPS, *, rounds: int = 5, inductor: bool = True,
              quick: bool = False, modes: tuple[str, ...] = ("dram", "cache"), log: Any = None) -> dict[str, Any]:
    """The whole benchmark: machine, STREAM bound (measured before and after; best of both), one row per case
    and data regime."""
    info = machine()
    bw0 = stream_bandwidth()
    rows = []
    for case in build_cases(op_names, quick=quick):
        _verify(case)
        for mode in modes:
            rows.append(run_case(case, mode, rounds, inductor))
            if log is not None:
                print(f"  {case.op} {case.label} {mode}: done", file=log, flush=True)
    bw1 = stream_bandwidth()
    bw = {k: max(bw0[k], bw1[k]) for k in bw0}
    info["load_avg_end"] = os.getloadavg()[0]
    return {"machine": info, "stream": bw, "rows": rows}


def _us(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e6:.1f}" if v < 1e-2 else f"{v * 1e3:.1f} ms"


def _x(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def table(data: dict[str, Any]) -> str:
    """Markdown: header (machine, ISA, threads, bound, contention) and one row per case and regime."""
    m, bw = data["machine"], data["stream"]
    lines = [f"Machine: {m['cpu']}; {m['usable_cpus']} usable CPUs, torch threads {m['threads']}, vector ISA "
             f"{m['isa']}, LLC {m['llc_mib']:.0f} MiB; torch {m['torch']}, python {m['python']}; "
             f"OMP_WAIT_POLICY {m['wait_policy']}; commit {m['commit']}; {m['date']}; 1-min load average "
             f"{m['load_avg']:.1f} at start, {m.get('load_avg_end', float('nan')):.1f} at end.",
             "",
             f"Bandwidth bound (STREAM-like, best of 10 at start and end): Read {bw.get('read', 0) / 1e9:.1f} GB/s, "
             f"Copy {bw['copy'] / 1e9:.1f} GB/s, Triad {bw['triad'] / 1e9:.1f} GB/s; best = "
             f"{bw['bound'] / 1e9:.1f} GB/s (read + write bytes; each row's bound is also at least its mix kernel's "
             "rate).",
             "",
             "Times are medians of interleaved rounds (µs unless marked); speed-ups divide medians. % of bound (dram "
             "rows of memory-bound ops) = (bytes / bound) / the kernel's best time; bytes = 4 (R + W) numel for R "
             "float32 arrays read and W written once; the row's bound = the faster of the STREAM rates above and "
             "`mix`: a one-pass kernel reading the arrays the op reads (its own input sets, in its cycle) and "
             "writing as many fresh arrays as it writes, with no arithmetic (msdfast_bench::stream_mix), best of "
             "3 blocks in each of the row's interleaved rounds (every block ~20 ms of one variant's calls) -- the same "
             "traffic with less work, so <= 100% up to "
             "timing noise. kernel = the public call inside "
             "ops.checks_once() (as the sampler loops call it); raw = torch.ops.msdfast.<op>.default. CPU share "
             "< 0.8 marks a contended row.",
             "",
             "| op | size | data | reference | kernel | raw | inductor | inductor-graph /op | kernel vs reference "
             "| kernel vs inductor | kernel vs inductor-graph | % of bound | CPU share |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    notes = []
    for r in data["rows"]:
        med = lambda k: r.get(k, {}).get("median")  # noqa: E731
        bound = "-"
        if r["mode"] == "dram" and r.get("bytes") and "kernel" in r:
            rate = max(bw["bound"], r["bytes"] / r["mix"]["best"] if "mix" in r else 0.0)
            bound = f"{(r['bytes'] / rate) / r['kernel']['best']:.0%}"
        share = r.get("kernel", {}).get("cpu_share")
        lines.append(f"| {r['op']} | {r['size']} | {r['mode']} | {_us(med('reference'))} | {_us(med('kernel'))} | "
                     f"{_us(med('raw'))} | {_us(med('inductor'))} | {_us(med('inductor-graph'))} | "
                     f"{_x(med('reference'), med('kernel'))} | {_x(med('inductor'), med('kernel'))} | "
                     f"{_x(med('inductor-graph'), med('kernel'))} | {bound} | "
                     f"{'-' if share is None else f'{share:.2f}'} |")
        notes += [f"{r['op']} {r['size']} {r['mode']}: {n}" for n in r.get("notes", [])]
    if notes:
        lines += ["", "Notes: " + "; ".join(dict.fromkeys(notes))]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- CLI
def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", choices=SUITES, help="which benchmark suite (kernels: the fused ops)")
    parser.add_argument("--ops", nargs="+", default=list(OPS), choices=OPS, help="ops to benchmark (default: all)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per case (default 5)")
    parser.add_argument("--quick", action="store_true", help="small sizes only, no hash grid")
    parser.add_argument("--no-inductor", action="store_true", help="skip the torch.compile columns")
    parser.add_argument("--data", nargs="+", choices=("dram", "cache"), default=["dram", "cache"],
                        help="data regimes (default both)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads for the run")
    parser.add_argument("--json", default=None, help="also write the raw results (JSON) here")
    parser.add_argument("--table", default=None, help="also write the markdown table here")
    parser.add_argument("--from-json", default=None, metavar="FILE", help="only print the table of a results JSON")


def run_bench(args: argparse.Namespace) -> int:
    if args.from_json:
        path = Path(args.from_json)
        if not path.is_file():
            raise UserInputError(f"--from-json: {path}: no such file")
        try:
            text = table(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserInputError(f"--from-json: {path}: not a msdfast bench result ({type(exc).__name__}: "
                                 f"{exc})") from None
    else:
        if args.rounds < 1:
            raise UserInputError(f"--rounds: must be >= 1, got {args.rounds}")
        if args.threads is not None:
            if args.threads < 1:
                raise UserInputError(f"--threads: must be >= 1, got {args.threads}")
            torch.set_num_threads(args.threads)
        data = run_cases(list(args.ops), rounds=args.rounds, inductor=not args.no_inductor, quick=args.quick,
                         modes=tuple(dict.fromkeys(args.data)), log=sys.stderr)
        text = table(data)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(data, indent=1))
    print(text)
    if args.table:
        Path(args.table).parent.mkdir(parents=True, exist_ok=True)
        Path(args.table).write_text(text)
    return 0


run = run_bench
