"""The `msdfast` command. Each subcommand lives in its own module, imported only when run."""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, help). Each module defines add_arguments(parser) and run(args) -> int.
SUBCOMMANDS = {
    "info": ("msdfast.cli_info", "versions, accelerators and the backend each op uses"),
    "demo": ("msdfast.cli_info", "a small demo of the fused sampling step"),
    "toy": ("msdfast.toy.study", "the 2D toy distillation study (MSD paper tables 1-3, figures 1 and 3)"),
    "bench": ("msdfast.bench", "throughput benchmarks (msdfast bench kernels)"),
    "image": ("msdfast.pipelines.image", "text-to-2D image-field distillation on Stable Diffusion"),
    "3d": ("msdfast.pipelines.threed", "text-to-3D NeRF distillation on Stable Diffusion"),
    "profile": ("msdfast.profile", "NFE / time / memory profile of one gradient per method"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="msdfast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    # Build only the requested subcommand's parser so `msdfast info` never imports diffusers.
    wanted = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    for name, (module, help_) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_)
        if name == wanted:
            mod = importlib.import_module(module)
            getattr(mod, f"add_{name}_arguments", getattr(mod, "add_arguments", lambda _p: None))(p)
    args = parser.parse_args(argv)
    mod = importlib.import_module(SUBCOMMANDS[args.command][0])
    runner = getattr(mod, f"run_{args.command}", None) or getattr(mod, "run")
    return int(runner(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
