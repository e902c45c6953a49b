"""The `msdfast` command. Each subcommand lives in its own module, imported only when run.

Every subcommand takes --debug (a traceback for errors), --verbose / --quiet (the `msdfast` logger's level:
DEBUG / WARNING instead of INFO). Bad user input -- a flag, an option, a config file, a model folder -- is
reported as ONE line naming it ("msdfast image: error: --steps: must be >= 1, got 0") with exit status 2;
msdfast.errors.UserInputError carries such errors from every layer (and a FileNotFoundError, which names
its file, is reported the same way).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Any

from . import _threads
from .errors import UserInputError

# name -> (module, help). Each module defines add_arguments(parser) and run(args) -> int.
SUBCOMMANDS = {
    "info": ("msdfast.cli_info", "versions, accelerators and the backend each op uses"),
    "demo": ("msdfast.cli_info", "a small demo of the fused sampling step"),
    "toy": ("msdfast.toy.study", "the 2D toy distillation study (MSD paper tables 1-3, figures 1 and 3)"),
    "bench": ("msdfast.bench", "throughput benchmarks (msdfast bench kernels)"),
    "image": ("msdfast.pipelines.image", "text-to-2D image-field distillation on Stable Diffusion"),
    "3d": ("msdfast.pipelines.threed", "text-to-3D NeRF distillation on Stable Diffusion"),
    "digits": ("msdfast.digits.study", "the digits latent-diffusion model and the image-domain study (train, gate)"),
    "sweep": ("msdfast.sweep.cli", "prompts x seeds x methods sweeps of image/3d/digits/toy, sharded over "
                                   "torchrun / SLURM"),
    "profile": ("msdfast.profile", "NFE / time / memory profile of one gradient per method"),
}
EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a UserInputError (one line, exit 2) instead of usage text + exit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserInputError(f"{message} (see {self.prog} --help)")


def _common_flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("output")
    g.add_argument("--debug", action="store_true", help="show the traceback of an error")
    v = g.add_mutually_exclusive_group()
    v.add_argument("--verbose", "-v", action="store_true", help="log debug messages too")
    v.add_argument("--quiet", "-q", action="store_true", help="log warnings and errors only")
    return p


class _StderrHandler(logging.StreamHandler):
    """Writes to sys.stderr as it is at each record (not the stream of the moment the handler was made), so a
    replaced or closed stderr (tests, redirect_stderr) never breaks logging."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def setup_logging(verbose: bool = False, quiet: bool = False) -> logging.Logger:
    """The `msdfast` logger on stderr ("msdfast: message"), INFO by default."""
    log = logging.getLogger("msdfast")
    log.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        h = _StderrHandler()
        h.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        log.addHandler(h)
    log.propagate = False
    return log


def _build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = _Parser(prog="msdfast", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    common = _common_flags()
    # Build only the requested subcommand's parser so `msdfast info` never imports diffusers.
    wanted = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    for name, (module, help_) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_, parents=[common],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter if name in ("bench", "info", "demo")
                           else argparse.HelpFormatter)
        if name == wanted:
            mod = importlib.import_module(module)
            getattr(mod, f"add_{name}_arguments", getattr(mod, "add_arguments", lambda _p: None))(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    prog = "msdfast" + (f" {argv[0]}" if argv and argv[0] in SUBCOMMANDS else "")
    try:
        _threads.raise_startup_error()   # a bad MSDFAST_NUM_THREADS, seen when `import msdfast` ran
        args = _build_parser(argv).parse_args(argv)
        setup_logging(getattr(args, "verbose", False), getattr(args, "quiet", False))
        mod = importlib.import_module(SUBCOMMANDS[args.command][0])
        runner = getattr(mod, f"run_{args.command}", None) or getattr(mod, "run")
        return int(runner(args) or 0)
    except (UserInputError, FileNotFoundError) as e:   # a missing file the user named is their input too
        if debug:
            raise
        msg = " ".join(str(e).split())   # one line, whatever the message held
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
