"""`msdfast toy train`: train the learned toy denoisers (docs/math.md sec. 3; Karras et al. 2024 public toy recipe).

Recipe: ToyMLP (msdfast.denoisers.mlp) regressing a target score with loss weight s^2,
    loss = mean_b s_b^2 mean_j (score_target(x_b; s_b) - grad log p_theta(x_b; s_b))_j^2,
s ~ logN(P_mean = -2.3, P_std = 1.5), batch 4096, Adam betas (0.9, 0.99), lr 1e-2 / sqrt(max(it / 512, 1)),
power-function EMA with relative std 0.010 (EDM2 eq. 127: beta = (1 - 1/(it+1))^(gamma+1)).

Targets:
* tree models: the exact GMM score of the noised mixture, x ~ p_s (ops.gmm_score, float64). The exact score
  over 1016 thin components costs ~0.5-1.5 s per 4096-point batch with the reference op on 2 shared cores,
  so by default the (x, s, score) triples come from a fixed pool of `--pool` (2^19) exact draws, resampled
  every iteration; `--pool 0` draws fresh ones every iteration exactly as the public code (fast machines).
* spiral / pinwheel: denoising score matching over the 1e4 training points of `load_dataset(name, seed=0)`:
  x = u + s n, target -n / s (its conditional mean is the empirical ideal denoiser's score (D* - x) / s^2,
  MSD eq. 16, so both targets have the same minimiser; DSM costs nothing per iteration).

Checkpoints (safetensors: net, EMA, Adam state, iteration, RNG state) every `--ckpt-every` iterations to
`<out-dir>/<model>.ckpt.safetensors`; `--resume` continues from it. The final EMA weights go to
`<out-dir>/<model>.safetensors` (the shipped files live in msdfast/toy/weights).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import check_seed
from ..denoisers.mlp import ToyMLP, save_toy_mlp
from ..errors import UserInputError
from .datasets import load_dataset, tree_gmm
from .models import WEIGHTS_DIR

__all__ = ["Recipe", "RECIPES", "train_toy_mlp", "add_train_arguments", "run_train", "ema_beta"]


@dataclass(frozen=True)
class Recipe:
    data: str                 # "tree_A", "tree_AB", "spiral", "pinwheel"
    hidden_dim: int = 64
    num_layers: int = 4
    iterations: int = 4096
    batch_size: int = 4096
    lr_ref: float = 1e-2
    lr_iter: int = 512
    p_mean: float = -2.3
    p_std: float = 1.5
    sigma_data: float = 0.5
    ema_std: float = 0.010
    pool: int = 1 << 19       # tree only: size of the exact-score pool (0 = fresh draws every iteration)
    seed: int = 0


RECIPES = {
    "tree_A": Recipe("tree_A"),
    "tree_AB": Recipe("tree_AB", hidden_dim=32, iterations=512),      # public CFG model: clsAB dim32 iter512
    "tree_A_guide": Recipe("tree_A", hidden_dim=32, iterations=512),  # public autoguidance model
    "spiral": Recipe("spiral"),
    "pinwheel": Recipe("pinwheel"),
}


def ema_beta(std: float, it: int) -> float:
    """Power-function EMA decay after it+1 steps (EDM2, Karras et al. 2024b, eq. 127 and its std->gamma map)."""
    gamma = max(np.roots([1, 7, 16 - std ** -2, 12 - std ** -2]).real)
    return float((1 - 1 / (it + 1)) ** (gamma + 1))


class _Targets:
    """Draws (x, s, target score) batches for one recipe."""

    def __init__(self, r: Recipe, gen: torch.Generator, progress: bool) -> None:
        self.r, self.gen = r, gen
        self.gmm = tree_gmm(r.data[5:]) if r.data.startswith("tree") else None
        self.points = None if self.gmm else load_dataset(r.data, seed=0).train.to(torch.float32)
        self.pool = None
        if self.gmm is not None and r.pool > 0:
            # The pool depends only on the seed, so a resumed run rebuilds the identical pool.
            pg = torch.Generator().manual_seed(r.seed + 7919)
            xs, ss, ts = [], [], []
            for _ in tqdm(range(0, r.pool, 4096), desc=f"exact-score pool ({r.pool})", disable=not progress,
                          leave=False):
                x, s, t = self._exact(min(4096, r.pool - len(xs) * 4096), pg)
                xs.append(x), ss.append(s), ts.append(t)
            self.pool = (torch.cat(xs), torch.cat(ss), torch.cat(ts))

    def _sigma(self, n: int, g: torch.Generator) -> torch.Tensor:
        return (torch.randn(n, generator=g, dtype=torch.float64) * self.r.p_std + self.r.p_mean).exp()

    def _exact(self, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = self._sigma(n, g)
        x = self.gmm.sample(n, g) + s[:, None] * torch.randn(n, 2, generator=g, dtype=torch.float64)
        return x.float(), s.float(), self.gmm.score(x, s).float()

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.pool is not None:
            i = torch.randint(self.pool[0].shape[0], (n,), generator=self.gen)
            return self.pool[0][i], self.pool[1][i], self.pool[2][i]
        if self.gmm is not None:
            return self._exact(n, self.gen)
        s = self._sigma(n, self.gen).float()
        u = self.points[torch.randint(self.points.shape[0], (n,), generator=self.gen)]
        noise = torch.randn(n, 2, generator=self.gen)
        return u + s[:, None] * noise, s, -noise / s[:, None]


def _save_ckpt(path: Path, it: int, net: ToyMLP, ema: ToyMLP, opt: torch.optim.Adam, gen: torch.Generator,
               recipe: Recipe) -> None:
    from safetensors.torch import save_file
    tensors = {f"net.{k}": v for k, v in net.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    for i, p in enumerate(net.parameters()):
        st = opt.state.get(p, {})
        for k in ("exp_avg", "exp_avg_sq", "step"):
            if k in st:
                tensors[f"adam.{i}.{k}"] = torch.as_tensor(st[k]).reshape(-1).clone()
    tensors["rng"] = gen.get_state()
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp),
              metadata={"iteration": str(it), "recipe": json.dumps(asdict(recipe))})
    tmp.replace(path)  # atomic: an interrupted save never corrupts the previous checkpoint


def _load_ckpt(path: Path, net: ToyMLP, ema: ToyMLP, opt: torch.optim.Adam, gen: torch.Generator,
               recipe: Recipe) -> int:
    from safetensors import safe_open
    from safetensors.torch import load_file
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    if json.loads(meta["recipe"]) != asdict(recipe):
        raise ValueError(f"resume: checkpoint {path} was written by a different recipe: {meta['recipe']}")
    t = load_file(str(path))
    net.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("net.")})
    ema.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("ema.")})
    for i, p in enumerate(net.parameters()):
        if f"adam.{i}.exp_avg" in t:
            opt.state[p] = {"step": t[f"adam.{i}.step"].reshape(()).clone(),
                            "exp_avg": t[f"adam.{i}.exp_avg"].reshape(p.shape).clone(),
                            "exp_avg_sq": t[f"adam.{i}.exp_avg_sq"].reshape(p.shape).clone()}
    gen.set_state(t["rng"])
    return int(meta["iteration"])


def train_toy_mlp(recipe: Recipe, out: str | Path | None = None, *, resume: bool = False, ckpt_every: int = 256,
                  stop_at: int | None = None, progress: bool = True) -> tuple[ToyMLP, dict]:
    """Train one toy model; returns (EMA model, info). With `out`, writes out (+ a checkpoint beside it).

    stop_at: leave after that many iterations with a checkpoint written (a time-boxed run; `resume` continues).
    """
    t0 = time.perf_counter()
    torch.manual_seed(recipe.seed)
    net = ToyMLP(recipe.hidden_dim, recipe.num_layers, recipe.sigma_data).train().requires_grad_(True)
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), betas=(0.9, 0.99))
    targets = _Targets(recipe, torch.Generator().manual_seed(recipe.seed + 1), progress)
    gen = targets.gen  # the batch stream is the one RNG state a checkpoint must carry
    out = None if out is None else Path(out)
    ckpt = None if out is None else out.with_name(out.stem + ".ckpt.safetensors")
    start = 0
    if resume and ckpt is not None and ckpt.is_file():
        start = _load_ckpt(ckpt, net, ema, opt, gen, recipe)
    losses = []
    bar = tqdm(range(start, recipe.iterations), desc=f"train {out.stem if out else recipe.data}",
               disable=not progress, initial=start, total=recipe.iterations)
    for it in bar:
        opt.param_groups[0]["lr"] = recipe.lr_ref / math.sqrt(max(it / recipe.lr_iter, 1))
        x, s, target = targets.batch(recipe.batch_size)
        pred = net.score(x, s, create_graph=True)
        loss = (s ** 2 * (target - pred).square().mean(-1)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        beta = ema_beta(recipe.ema_std, it)
        with torch.no_grad():
            for p_net, p_ema in zip(net.parameters(), ema.parameters()):
                p_ema.lerp_(p_net.detach(), 1 - beta)
        losses.append(loss.detach().item())
        if it % 32 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-32:]):.4f}")
        done = it + 1
        stop = stop_at is not None and done >= stop_at and done < recipe.iterations
        if ckpt is not None and done < recipe.iterations and (stop or (ckpt_every > 0 and done % ckpt_every == 0)):
            _save_ckpt(ckpt, done, net, ema, opt, gen, recipe)
        if stop:
            bar.close()
            return ema.eval(), {"recipe": asdict(recipe), "stopped_at": done,
                                "seconds": time.perf_counter() - t0}
    info = {"recipe": asdict(recipe), "final_loss": float(np.mean(losses[-64:])) if losses else None,
            "seconds": time.perf_counter() - t0, "torch_threads": torch.get_num_threads()}
    ema.eval()
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_toy_mlp(ema, out, {"recipe": info["recipe"], "final_loss": info["final_loss"]})
        if ckpt is not None and ckpt.is_file():
            ckpt.unlink()
    return ema, info


# ----------------------------------------------------------------------------------------- CLI
def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `msdfast toy train` (routed here by msdfast.toy.study)."""
    parser.add_argument("models", nargs="*", default=[], metavar="MODEL",
                        help=f"models to train (default: all): {', '.join(RECIPES)}")
    parser.add_argument("--out-dir", default=str(WEIGHTS_DIR),
                        help="where <model>.safetensors go (default: the package's shipped weights folder)")
    parser.add_argument("--iterations", type=int, default=None, help="override the recipe's iteration count")
    parser.add_argument("--batch-size", type=int, default=None, help="override the recipe's batch size (4096)")
    parser.add_argument("--pool", type=int, default=None,
                        help="tree targets: exact-score pool size (default 524288; 0 = fresh draws every iteration)")
    parser.add_argument("--seed", type=int, default=None, help="override the recipe's seed (0)")
    parser.add_argument("--resume", action="store_true", help="continue from <out-dir>/<model>.ckpt.safetensors")
    parser.add_argument("--ckpt-every", type=int, default=256, help="checkpoint period in iterations (0 = never)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: the 64-wide MLP gains nothing from more, and on a "
                             "shared CPU extra threads spin-wait)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")


def run_train(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    models = args.models or list(RECIPES)
    for name in models:
        if name not in RECIPES:
            raise UserInputError(f"MODEL {name!r}: unknown; expected one of {', '.join(RECIPES)}")
    for k in ("iterations", "batch_size", "threads"):
        if getattr(args, k) is not None and getattr(args, k) < 1:
            raise UserInputError(f"--{k.replace('_', '-')}: must be >= 1, got {getattr(args, k)}")
    for k in ("pool", "ckpt_every"):
        if getattr(args, k) is not None and getattr(args, k) < 0:
            raise UserInputError(f"--{k.replace('_', '-')}: must be >= 0, got {getattr(args, k)}")
    if args.seed is not None:
        check_seed(args.seed, "--seed")
    for name in models:
        over = {k: v for k, v in (("iterations", args.iterations), ("batch_size", args.batch_size),
                                   ("pool", args.pool), ("seed", args.seed)) if v is not None}
        recipe = replace(RECIPES[name], **over)
        _, info = train_toy_mlp(recipe, Path(args.out_dir) / f"{name}.safetensors", resume=args.resume,
                                ckpt_every=args.ckpt_every, progress=not args.no_progress)
        print(f"{name}: {info['seconds']:.1f} s, final loss {info['final_loss']:.4f} "
              f"({info['torch_threads']} torch threads) -> {Path(args.out_dir) / (name + '.safetensors')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m msdfast.toy.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(parser)
    return run_train(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
