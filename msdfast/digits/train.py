"""`msdfast digits train`: train the digits latent-diffusion model (SD folder format) on the train split.

Two phases, one resumable run (seeded; every random draw comes from one torch.Generator whose state is
checkpointed):
1. vae: AutoencoderKL on the train digits (RGB, gray in every channel, x * 2 - 1), loss
   mean |D(z) - x|^2 + KL_WEIGHT * KL(q(z|x) || N(0, I)) with z a posterior sample (Kingma & Welling 2014
   eq. 10, SD's KL-regularised autoencoder, Rombach et al. 2022 sec. 3). Afterwards scaling_factor =
   1 / std of the training latents (Rombach et al. 2022 sec. 3.3 / appendix G, SD's 0.18215).
2. unet (+ text encoder, jointly): DDPM's simple loss (Ho et al. 2020 eq. 14)
   E_{t ~ U{0..999}, eps} |eps - eps_theta(sqrt(abar_t) z0 + sqrt(1 - abar_t) eps, t, c)|^2
   on SD's scaled_linear betas, z0 = scaling_factor * a posterior sample, c = the text states of a random
   prompt naming the digit (PROMPT_TEMPLATES), replaced by the empty prompt with probability CFG_DROPOUT
   (classifier-free guidance training, Ho & Salimans 2022 sec. 3.2). AdamW, linear warm-up then cosine,
   EMA of the weights (the EMA is what ships).

Checkpoints: <out>.ckpt.safetensors (weights, EMA, AdamW state, step, phase, generator state; the recipe in
its metadata, checked on --resume). The final folder is written with save_pretrained (safetensors).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .data import load_digits_split, to_rgb
from .model import NUMBER_WORDS, PROMPT_TEMPLATES, build_components, digits_model_path, save_folder, \
    training_prompts, write_tokenizer

__all__ = ["Recipe", "train_digits_model", "add_train_arguments", "run_train"]


@dataclass(frozen=True)
class Recipe:
    seed: int = 0
    vae_steps: int = 500
    vae_batch: int = 32
    vae_lr: float = 2e-3
    kl_weight: float = 1e-6
    unet_steps: int = 2500
    unet_batch: int = 64
    unet_lr: float = 1e-3
    warmup: int = 100
    cfg_dropout: float = 0.1
    ema_decay: float = 0.998


def _lr(base: float, step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))


def _flat_optimizer(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    sd = opt.state_dict()
    tensors = {f"{prefix}.{i}.{k}": torch.as_tensor(v).clone() for i, st in sd["state"].items()
               for k, v in st.items()}
    return tensors, json.dumps(sd["param_groups"])


def _load_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: str) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith(prefix + "."):
            i, name = k[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": json.loads(groups)})


class _Run:
    """Models, EMA, optimisers, generator and the step counter of one training run."""

    def __init__(self, recipe: Recipe, vocab_size: int) -> None:
        self.r = recipe
        c = build_components(vocab_size, seed=recipe.seed)
        self.vae, self.unet, self.text = c["vae"], c["unet"], c["text_encoder"]
        for m in (self.vae, self.unet, self.text):
            m.train().requires_grad_(True)
        self.ema_unet = copy.deepcopy(self.unet).eval().requires_grad_(False)
        self.ema_text = copy.deepcopy(self.text).eval().requires_grad_(False)
        self.opt_vae = torch.optim.AdamW(self.vae.parameters(), lr=recipe.vae_lr, weight_decay=0.0)
        self.opt_unet = torch.optim.AdamW(list(self.unet.parameters()) + list(self.text.parameters()),
                                          lr=recipe.unet_lr, weight_decay=1e-2)
        self.gen = torch.Generator().manual_seed(recipe.seed + 12)
        self.step = 0                       # global: 0..vae_steps-1 vae, then unet
        self.scaling_factor = 1.0

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"vae": self.vae, "unet": self.unet, "text": self.text, "ema_unet": self.ema_unet,
                "ema_text": self.ema_text}

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file
        t = {f"{n}.{k}": v for n, m in self.modules().items() for k, v in m.state_dict().items()}
        ov, gv = _flat_optimizer("opt_vae", self.opt_vae)
        ou, gu = _flat_optimizer("opt_unet", self.opt_unet)
        t.update(ov)
        t.update(ou)
        t["rng"] = self.gen.get_state()
        meta = {"step": str(self.step), "recipe": json.dumps(asdict(self.r)), "groups_vae": gv, "groups_unet": gu,
                "scaling_factor": repr(self.scaling_factor)}
        tmp = path.with_suffix(".tmp")
        save_file({k: v.detach().contiguous().cpu() for k, v in t.items()}, str(tmp), metadata=meta)
        tmp.replace(path)

    def load(self, path: Path) -> None:
        from safetensors import safe_open
        from safetensors.torch import load_file
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        if json.loads(meta["recipe"]) != asdict(self.r):
            raise ValueError(f"resume: checkpoint {path} was written by a different recipe: {meta['recipe']}")
        t = load_file(str(path))
        for n, m in self.modules().items():
            m.load_state_dict({k[len(n) + 1:]: v for k, v in t.items() if k.startswith(n + ".")})
        _load_optimizer("opt_vae", self.opt_vae, t, meta["groups_vae"])
        _load_optimizer("opt_unet", self.opt_unet, t, meta["groups_unet"])
        self.gen.set_state(t["rng"])
        self.step = int(meta["step"])
        self.scaling_factor = float(meta["scaling_factor"])


def _prompt_ids(tokenizer, max_len: int) -> torch.Tensor:
    """Token ids [10 * T + 1, L]: row d * T + j is template j for digit d, the last row the empty prompt."""
    prompts = [p for d in range(len(NUMBER_WORDS)) for p in training_prompts(d)] + [""]
    return tokenizer(prompts, padding="max_length", max_length=max_len, truncation=True,
                     return_tensors="pt").input_ids


def train_digits_model(recipe: Recipe, out: str | Path, *, resume: bool = False, ckpt_every: int = 200,
                       stop_at: int | None = None, progress: bool = True) -> dict:
    """Train (or resume) and write the SD folder to `out`; returns info. stop_at: leave after that many total
    steps with a checkpoint written (time-boxed run; `resume` continues)."""
    from transformers import CLIPTokenizer

    from ..schedule import VPSchedule
    from .model import scheduler_config

    t0 = time.perf_counter()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ckpt = out.with_name(out.name + ".ckpt.safetensors")
    tok_dir = out.with_name(out.name + ".tokenizer")
    vocab = write_tokenizer(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    run = _Run(recipe, vocab)
    if resume and ckpt.is_file():
        run.load(ckpt)
    split = load_digits_split()
    x_train = to_rgb(split.train_images) * 2.0 - 1.0                 # [N, 3, 32, 32] in [-1, 1]
    labels = split.train_labels
    ids = _prompt_ids(tokenizer, tokenizer.model_max_length)
    n_tpl = len(PROMPT_TEMPLATES)
    abar = VPSchedule.from_config(scheduler_config()).alphas_cumprod.float()
    total = recipe.vae_steps + recipe.unet_steps
    end = total if stop_at is None else min(total, stop_at)
    g = run.gen
    losses: list[float] = []
    bar = tqdm(range(run.step, end), initial=run.step, total=total, desc="train digits", disable=not progress)
    post_mean = post_std = None
    for step in bar:
        if step < recipe.vae_steps:                                   # ---- phase 1: VAE
            for pg in run.opt_vae.param_groups:
                pg["lr"] = _lr(recipe.vae_lr, step, recipe.vae_steps, recipe.warmup)
            x = x_train[torch.randint(x_train.shape[0], (recipe.vae_batch,), generator=g)]
            post = run.vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=g)
            rec = run.vae.decode(z).sample
            loss = (rec - x).square().mean() + recipe.kl_weight * post.kl().mean()
            run.opt_vae.zero_grad(set_to_none=True)
            loss.backward()
            run.opt_vae.step()
        else:                                                          # ---- phase 2: UNet + text encoder
            if post_mean is None:
                run.vae.eval().requires_grad_(False)
                with torch.no_grad():
                    d = run.vae.encode(x_train).latent_dist
                    post_mean, post_std = d.mean, d.std
                if step == recipe.vae_steps:      # first UNet step: fix the scaling factor from the train latents
                    run.scaling_factor = float(1.0 / post_mean.std())
            s = step - recipe.vae_steps
            for pg in run.opt_unet.param_groups:
                pg["lr"] = _lr(recipe.unet_lr, s, recipe.unet_steps, recipe.warmup)
            b = recipe.unet_batch
            i = torch.randint(post_mean.shape[0], (b,), generator=g)
            z0 = (post_mean[i] + post_std[i] * torch.randn(post_mean[i].shape, generator=g)) * run.scaling_factor
            t = torch.randint(abar.shape[0], (b,), generator=g)
            eps = torch.randn(z0.shape, generator=g)
            a = abar[t].view(-1, 1, 1, 1)
            zt = a.sqrt() * z0 + (1 - a).sqrt() * eps
            row = labels[i] * n_tpl + torch.randint(n_tpl, (b,), generator=g)
            drop = torch.rand(b, generator=g) < recipe.cfg_dropout
            row = torch.where(drop, torch.full_like(row, ids.shape[0] - 1), row)
            h = run.text(ids[row])[0]
            pred = run.unet(zt, t, encoder_hidden_states=h).sample
            loss = (pred - eps).square().mean()
            run.opt_unet.zero_grad(set_to_none=True)
            loss.backward()
            run.opt_unet.step()
            decay = min(recipe.ema_decay, (1 + s) / (10 + s))
            with torch.no_grad():
                for src, dst in ((run.unet, run.ema_unet), (run.text, run.ema_text)):
                    for p, q in zip(src.parameters(), dst.parameters()):
                        q.lerp_(p.detach(), 1 - decay)
        losses.append(float(loss.detach()))
        if step % 20 == 0:
            bar.set_postfix(phase="vae" if step < recipe.vae_steps else "unet",
                            loss=f"{sum(losses[-20:]) / len(losses[-20:]):.4f}")
        run.step = step + 1
        if run.step < total and ((ckpt_every and run.step % ckpt_every == 0) or run.step == end):
            run.save(ckpt)
    bar.close()
    info = {"recipe": asdict(recipe), "steps_done": run.step, "seconds": time.perf_counter() - t0,
            "final_loss": sum(losses[-50:]) / max(1, len(losses[-50:])) if losses else None,
            "scaling_factor": run.scaling_factor, "torch_threads": torch.get_num_threads()}
    if run.step >= total:
        run.vae.register_to_config(scaling_factor=run.scaling_factor)
        save_folder(out, run.ema_unet, run.vae.eval(), run.ema_text)
        (out / "training.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        ckpt.unlink(missing_ok=True)
    return info


# ----------------------------------------------------------------------------------------- CLI
def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=str(digits_model_path()),
                   help="model folder to write (default: the package's shipped folder)")
    for f in ("seed", "vae_steps", "unet_steps", "vae_batch", "unet_batch"):
        p.add_argument("--" + f.replace("_", "-"), type=int, default=None, help=f"override the recipe's {f}")
    p.add_argument("--resume", action="store_true", help="continue from OUT.ckpt.safetensors")
    p.add_argument("--ckpt-every", type=int, default=200)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true")


def run_train(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    over = {f: getattr(args, f) for f in ("seed", "vae_steps", "unet_steps", "vae_batch", "unet_batch")
            if getattr(args, f) is not None}
    for k, v in over.items():
        if v < (0 if k == "seed" else 1):
            from ..errors import UserInputError
            raise UserInputError(f"--{k.replace('_', '-')}: must be positive, got {v}")
    info = train_digits_model(replace(Recipe(), **over), args.out, resume=args.resume,
                              ckpt_every=args.ckpt_every, progress=not args.no_progress)
    print(f"digits model: {info['steps_done']} steps, {info['seconds']:.0f} s, final loss {info['final_loss']:.4f}, "
          f"scaling factor {info['scaling_factor']:.4f} -> {args.out}")
    return 0
