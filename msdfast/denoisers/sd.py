"""Stable Diffusion (diffusers) behind the Denoiser protocol, loaded without network access.

* Loads unet/, vae/, text_encoder/, tokenizer/ and scheduler/scheduler_config.json of a diffusers pipeline
  folder (SD 1.5, 2.1-base, 2.1 768-v, ...; `StableDiffusionPipeline.save_pretrained` output, tokenizer.json-only
  tokenizers of transformers >= 5, `variant="fp16"` weights) with diffusers'/transformers' loaders and
  `local_files_only=True`; a hub id resolves from the local Hugging Face cache; never touches the network.
  A single `.safetensors`/`.ckpt` checkpoint is accepted when a diffusers folder with the matching configs is
  given as `config=` (the single-file loader would otherwise download configs). `from_pipeline(pipe)` wraps an
  in-memory StableDiffusionPipeline. diffusers/transformers come with `pip install 'msdfast[diffusers]'`.
* `_eps` is ONE batched UNet call: CFG pairs, MSD chains and views are batched by the caller (eps_pair,
  repeat_cond) into a single forward. fp16/bf16 weights, channels_last, SDPA attention.
* epsilon- and v-prediction models are returned as eps through `VPSchedule.to_eps` (docs/math.md sec. 1).
* Text embeddings are computed once per (text encoder + tokenizer content, prompt) and cached in memory and on
  disk (safetensors in a verified cache entry: msdfast.cache_entry).
* `encode_images` follows threestudio: bilinear resize to the encode resolution (512 for SD 1.5/2.1-base),
  x * 2 - 1, a posterior SAMPLE times the VAE scaling factor; `decode_latents` inverts it.
"""
from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F

from ..cache_dir import default_cache_dir
from ..errors import UserInputError, require_packages
from ..prompts import VIEW_SUFFIXES, PromptEmbeddings
from ..schedule import VPSchedule
from .base import Cond, Denoiser

__all__ = ["StableDiffusionDenoiser", "load_stable_diffusion", "from_pipeline", "resolve_model", "is_hub_id", "BUILTIN_MODELS"]

# Models shipped inside the package, by name (`--model digits`): the trained digits SD folder (msdfast.digits).
BUILTIN_MODELS = {"digits": Path(__file__).resolve().parents[1] / "digits" / "model"}

_REQUIRED = {
    "unet": ("config.json",),
    "vae": ("config.json",),
    "text_encoder": ("config.json",),
    "tokenizer": ("vocab.json", "merges.txt"),
    "scheduler": ("scheduler_config.json",),
}
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def _parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype: expected one of {sorted(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


def _check_folder(root: Path, variant: str | None = None) -> None:
    """Raise FileNotFoundError naming every missing piece of a diffusers SD folder.

    The tokenizer may be a transformers >= 5 `tokenizer.json` or the classic vocab.json + merges.txt; weights
    are `*.safetensors`/`*.bin` (`*.<variant>.safetensors` with a variant).
    """
    if not root.exists():
        raise FileNotFoundError(f"model: folder {str(root)!r} does not exist (msdfast loads Stable Diffusion "
                                "from a local diffusers folder or the local Hugging Face cache; see README "
                                "'Stable Diffusion weights')")
    missing = []
    for sub, files in _REQUIRED.items():
        if not (root / sub).is_dir():
            missing.append(f"{sub}/")
            continue
        if sub == "tokenizer" and (root / sub / "tokenizer.json").exists():
            continue
        missing += [f"{sub}/{f}" for f in files if not (root / sub / f).exists()]
        if sub in ("unet", "vae", "text_encoder"):
            names = [p.name for p in (root / sub).iterdir() if p.suffix in (".safetensors", ".bin")]
            plain = [n for n in names if n.count(".") == 1]
            wanted = [n for n in names if f".{variant}." in n] if variant is not None else plain
            if not wanted and variant is None and names:
                found = sorted({n.split(".")[-2] for n in names if n.count(".") == 2})
                raise UserInputError(f"variant: {str(root / sub)!r} holds only {'/'.join(found)} weights; pass "
                                     f"variant={found[0]!r} (--variant {found[0]})")
            if not wanted:
                missing.append(f"{sub}/<weights>{'.' + variant if variant else ''}.safetensors")
    if missing:
        raise FileNotFoundError(f"model: {str(root)!r} is not a complete diffusers Stable Diffusion folder; "
                                f"missing: {', '.join(missing)}")


class StableDiffusionDenoiser(Denoiser):
    """eps_hat of a diffusers UNet2DConditionModel; conditions are text embeddings [B, 77, D]."""

    def __init__(self, unet: torch.nn.Module, vae: torch.nn.Module, text_encoder: torch.nn.Module,
                 tokenizer: Any, schedule: VPSchedule, *, model_id: str = "stable-diffusion",
                 cache_dir: str | os.PathLike | None | bool = None, encode_resolution: int | None = None,
                 channels_last: bool = True) -> None:
        super().__init__(schedule)
        for m in (unet, vae, text_encoder):
            m.eval().requires_grad_(False)
        self.unet, self.vae, self.text_encoder = unet, vae, text_encoder
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.model_path: str | None = None    # set by load_stable_diffusion: the resolved model path ...
        self.model_hash: str | None = None    # ... and the content hash of its files (msdfast.content_hash)
        self.channels_last = channels_last
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)
        self.vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
        self.scaling_factor = float(vae.config.scaling_factor)
        # SD 1.5 / 2.1-base: 64 latent px * 8 = 512 (threestudio's resize); 2.1-768: 768.
        self.encode_resolution = int(encode_resolution or unet.config.sample_size * self.vae_scale)
        if self.encode_resolution % self.vae_scale:
            raise ValueError(f"encode_resolution: must be a multiple of {self.vae_scale}")
        self.cache_dir = None if cache_dir is False else Path(cache_dir) if cache_dir else default_cache_dir()
        self._text_cache: dict[str, torch.Tensor] = {}
        self._text_id: str | None = None

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def latent_size(self) -> int:
        return self.encode_resolution // self.vae_scale

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    # ------------------------------------------------------------------ Denoiser
    def _eps(self, z: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        """One UNet forward for the whole batch (all CFG halves, chains and views), output as eps."""
        out = self.unet_output(z, t, cond)
        # Conversion (v -> eps) in float32: z and the schedule coefficients are exact there.
        return self.schedule.to_eps(out.float(), z.float(), t).to(z.dtype)

    def unet_output(self, z: torch.Tensor, t: torch.Tensor, cond: Cond, *, unet: torch.nn.Module | None = None,
                    class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """The UNet's native prediction (schedule.prediction_type) for z at t, uncounted: this denoiser's UNet or
        `unet` (a copy sharing its weights, e.g. VSD's LoRA eps_phi) with optional `class_labels` (ProlificDreamer's
        camera condition, added to the time embedding by the UNet's class embedding)."""
        if cond is None:
            raise ValueError("cond: Stable Diffusion needs text embeddings [B, 77, D] (use encode_prompts)")
        if cond.shape[0] != z.shape[0]:
            if cond.shape[0] != 1:
                raise ValueError(f"cond: batch {cond.shape[0]} does not match z's batch {z.shape[0]}")
            cond = cond.expand(z.shape[0], *cond.shape[1:])
        dt = self.dtype
        zin = z.to(dt)
        if self.channels_last and zin.ndim == 4:
            zin = zin.contiguous(memory_format=torch.channels_last)
        extra = {} if class_labels is None else {"class_labels": class_labels}
        net = self.unet if unet is None else unet
        return net(zin, t, encoder_hidden_states=cond.to(device=z.device, dtype=dt), return_dict=False, **extra)[0]

    # ------------------------------------------------------------------ text
    def text_identity(self) -> str:
        """Content key of what a prompt's embedding depends on: the text encoder's weights as loaded (names,
        dtype, bytes), the tokenizer's vocabulary, merges and length, and msdfast's version (the cache key adds
        the device type and dtype at the time of the call, and the prompt)."""
        if self._text_id is None:
            from .. import __version__
            from ..content_hash import hash_bytes, tensors_hash
            tok = self.tokenizer
            merges = sorted((" ".join(k), int(v)) for k, v in getattr(tok, "bpe_ranks", {}).items())
            if hasattr(tok, "backend_tokenizer"):   # a fast tokenizer: its whole spec (vocab, merges, normaliser)
                merges = [("backend", tok.backend_tokenizer.to_str())]
            self._text_id = hash_bytes(
                "text-embedding", __version__, type(tok).__name__, str(tok.model_max_length),
                json.dumps(tok.get_vocab(), sort_keys=True), json.dumps(merges),
                tensors_hash(self.text_encoder.state_dict().items()))
        return self._text_id

    def _text_key(self, prompt: str) -> str:
        from ..content_hash import hash_bytes
        return hash_bytes(self.text_identity(), self.device.type, str(self.text_encoder.dtype), prompt)[:32]

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Text-encoder hidden states [n, L, D] (float32, on the model's device), cached per prompt in memory and
        on disk (<cache>/text_embeddings/<key>/: msdfast.cache_entry, keyed on `text_identity` and the prompt)."""
        from ..cache_entry import load_entry, store_entry

        if isinstance(prompts, str):
            prompts = [prompts]
        todo = [p for p in dict.fromkeys(prompts) if self._text_key(p) not in self._text_cache]
        entry = (lambda p: self.cache_dir / "text_embeddings" / self._text_key(p)) if self.cache_dir else None
        if todo and entry is not None:
            from safetensors.torch import load_file
            for p in list(todo):
                found = load_entry(entry(p), what="text-embedding cache entry")
                if found is not None:
                    self._text_cache[self._text_key(p)] = load_file(str(found / "embedding.safetensors"))[
                        "embedding"].to(self.device)
                    todo.remove(p)
        if todo:
            ids = self.tokenizer(list(todo), padding="max_length", max_length=self.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt").input_ids.to(self.device)
            emb = self.text_encoder(ids)[0].float()
            for p, e in zip(todo, emb):
                self._text_cache[self._text_key(p)] = e
                if entry is not None:
                    from safetensors.torch import save_file
                    store_entry(entry(p), lambda tmp, e=e, p=p: save_file(
                        {"embedding": e.detach().cpu().contiguous()}, str(tmp / "embedding.safetensors"),
                        metadata={"model": self.model_id, "prompt": p}))
        return torch.stack([self._text_cache[self._text_key(p)] for p in prompts])

    def prompt_embeddings(self, prompt: str, negative_prompt: str = "", *,
                          view_dependent: bool = False) -> PromptEmbeddings:
        """Embeddings of prompt / negative prompt (and the four view-dependent prompts of threestudio)."""
        if not isinstance(prompt, str):
            raise TypeError("prompt: expected a string")
        cond, uncond = self.encode_prompts([prompt, negative_prompt]).split(1)
        if not view_dependent:
            return PromptEmbeddings(cond, uncond)
        views = self.encode_prompts([f"{prompt}, {s}" for s in VIEW_SUFFIXES])
        return PromptEmbeddings(cond, uncond, views, uncond.expand(len(VIEW_SUFFIXES), -1, -1))

    # ------------------------------------------------------------------ VAE
    def encode_images(self, rgb: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> latents [B, 4, h, w] (differentiable w.r.t. rgb; threestudio's path)."""
        if rgb.ndim != 4 or rgb.shape[1] != 3:
            raise ValueError(f"rgb: expected [B, 3, H, W], got {tuple(rgb.shape)}")
        r = self.encode_resolution
        if rgb.shape[-2:] != (r, r):
            rgb = F.interpolate(rgb, (r, r), mode="bilinear", align_corners=False)
        x = (rgb * 2.0 - 1.0).to(self.dtype)
        posterior = self.vae.encode(x).latent_dist
        return (posterior.sample(generator=generator) * self.scaling_factor).to(rgb.dtype)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, 4, h, w] -> rgb [B, 3, H, W] in [0, 1]."""
        x = self.vae.decode((latents / self.scaling_factor).to(self.dtype), return_dict=False)[0]
        return (x.float() * 0.5 + 0.5).clamp(0, 1)


def _require_diffusers() -> None:
    """One line naming the extra when diffusers/transformers are missing."""
    require_packages("model: Stable Diffusion", ("diffusers", "transformers"), "diffusers")


@contextlib.contextmanager
def _quiet_loading(verbose: bool) -> Iterator[None]:
    """Silence diffusers'/transformers' per-load warnings and progress bars (restored afterwards)."""
    if verbose:
        yield
        return
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog
    levels = (dlog.get_verbosity(), tlog.get_verbosity())
    dbar = dlog.is_progress_bar_enabled() if hasattr(dlog, "is_progress_bar_enabled") else True
    tbar = tlog.is_progress_bar_enabled() if hasattr(tlog, "is_progress_bar_enabled") else True
    dlog.set_verbosity_error(), tlog.set_verbosity_error()
    dlog.disable_progress_bar(), tlog.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        dlog.set_verbosity(levels[0]), tlog.set_verbosity(levels[1])
        if dbar:
            dlog.enable_progress_bar()
        if tbar:
            tlog.enable_progress_bar()


def is_hub_id(text: str) -> bool:
    """"org/name": a Hugging Face hub id (not a path: no leading . or ~, exactly one slash)."""
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~")) and "\\" not in text


def resolve_model(path: str | os.PathLike) -> Path:
    """A local folder/file as given, else a built-in model's folder by name (BUILTIN_MODELS: "digits"), else a
    hub id ("org/name") resolved from the LOCAL Hugging Face cache.

    Never touches the network (huggingface_hub's snapshot_download with local_files_only=True); a hub id that
    is not cached raises a one-line UserInputError saying how to fetch it.
    """
    root = Path(path).expanduser()
    if not root.exists() and str(path) in BUILTIN_MODELS:
        return BUILTIN_MODELS[str(path)]
    if root.exists() or not is_hub_id(str(path)):
        return root
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError
    try:
        return Path(snapshot_download(str(path), local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        from huggingface_hub.constants import HF_HUB_CACHE
        raise UserInputError(f"model: {str(path)!r} is neither a local folder nor in the local Hugging Face cache "
                             f"({HF_HUB_CACHE}); fetch it once with `hf download {path}` (or pass a local "
                             "diffusers folder)") from None


def load_stable_diffusion(path: str | os.PathLike, *, device: str | torch.device = "cpu",
                          dtype: str | torch.dtype = "float32", config: str | os.PathLike | None = None,
                          cache_dir: str | os.PathLike | None | bool = None,
                          encode_resolution: int | None = None,
                          channels_last: bool = True,
                          compile: bool | str = False, variant: str | None = None,
                          verbose: bool = False) -> StableDiffusionDenoiser:
    """Load a Stable Diffusion denoiser with diffusers' own loaders, without network access.

    path: a diffusers pipeline folder (`StableDiffusionPipeline.save_pretrained`, any transformers tokenizer
    layout: tokenizer.json or vocab.json + merges.txt), a hub id ("org/name") already in the local Hugging Face
    cache (resolve_model), or a single `.safetensors`/`.ckpt` file with `config=` a diffusers folder of the same
    family. Every loader gets local_files_only=True (HF_HUB_OFFLINE is NOT set for the process).
    variant: diffusers' weight variant, e.g. "fp16" for `*.fp16.safetensors` folders.
    verbose: show diffusers'/transformers' loading warnings and progress bars (silenced otherwise).
    compile: wrap the UNet in torch.compile (True = inductor, or a backend name), with dynamic batch shapes so
    CFG pairs, chains and views of any size reuse one graph.
    An in-memory pipeline: `from_pipeline(pipe)`.
    """
    _require_diffusers()
    torch_dtype = _parse_dtype(dtype)
    root = resolve_model(path)
    with _quiet_loading(verbose):
        if root.is_file():
            if config is None:
                raise FileNotFoundError(
                    f"config: {str(root)!r} is a single-file checkpoint; pass config=<a diffusers folder of the "
                    "same model family> (its unet/vae/text_encoder/tokenizer/scheduler configs) -- msdfast never "
                    "downloads configs")
            _check_folder_configs(Path(config))
            from diffusers import StableDiffusionPipeline
            pipe = StableDiffusionPipeline.from_single_file(str(root), config=str(config), local_files_only=True,
                                                            torch_dtype=torch_dtype, safety_checker=None)
            parts = (pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, dict(pipe.scheduler.config))
        else:
            _check_folder(root, variant)
            parts = _load_components(root, torch_dtype, variant)
    model_hash = _model_hash(root, config, cache_dir)
    den = _build(*parts, model_id=f"{root.resolve()}|{model_hash}", device=device, cache_dir=cache_dir,
                 encode_resolution=encode_resolution, channels_last=channels_last, compile=compile)
    den.model_path, den.model_hash = str(root.resolve()), model_hash
    return den


def from_pipeline(pipe: Any, *, device: str | torch.device | None = None,
                  cache_dir: str | os.PathLike | None | bool = None, encode_resolution: int | None = None,
                  channels_last: bool = True, compile: bool | str = False,
                  model_id: str | None = None) -> StableDiffusionDenoiser:
    """A denoiser around an in-memory diffusers StableDiffusionPipeline (its unet, vae, text_encoder, tokenizer
    and scheduler config; shared, not copied). device None: the pipeline's. model_id keys the text-embedding
    cache (default: the pipeline's name_or_path and the UNet's parameter count)."""
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        if getattr(pipe, part, None) is None:
            raise UserInputError(f"pipe: the pipeline has no {part} (a StableDiffusionPipeline is expected)")
    if model_id is None:
        n = sum(p.numel() for p in pipe.unet.parameters())
        model_id = f"pipeline:{getattr(pipe, 'name_or_path', '') or type(pipe).__name__}|{n}"
    dev = device if device is not None else next(pipe.unet.parameters()).device
    den = _build(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, dict(pipe.scheduler.config),
                 model_id=model_id, device=dev, cache_dir=cache_dir, encode_resolution=encode_resolution,
                 channels_last=channels_last, compile=compile)
    den.model_path, den.model_hash = None, model_id
    return den


def _load_components(root: Path, torch_dtype: torch.dtype, variant: str | None) -> tuple:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    kw = dict(local_files_only=True, torch_dtype=torch_dtype)
    try:
        unet = UNet2DConditionModel.from_pretrained(str(root), subfolder="unet", variant=variant, **kw)
        vae = AutoencoderKL.from_pretrained(str(root), subfolder="vae", variant=variant, **kw)
        text_encoder = CLIPTextModel.from_pretrained(str(root), subfolder="text_encoder", variant=variant,
                                                     local_files_only=True, **_transformers_dtype(torch_dtype))
    except (OSError, ValueError) as e:
        if variant is None:
            raise
        raise UserInputError(f"variant: {str(root)!r} has no {variant!r} weights for every component "
                             f"({str(e).splitlines()[0][:160]})") from None
    tokenizer = AutoTokenizer.from_pretrained(str(root), subfolder="tokenizer", local_files_only=True)
    sched_cfg = _read_scheduler_config(root / "scheduler" / "scheduler_config.json")
    return unet, vae, text_encoder, tokenizer, sched_cfg


def _transformers_dtype(torch_dtype: torch.dtype) -> dict[str, torch.dtype]:
    """transformers >= 4.56 names the argument `dtype` (torch_dtype is deprecated), older ones `torch_dtype`."""
    import transformers
    from packaging.version import Version
    return {"dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype": torch_dtype}


def _build(unet: Any, vae: Any, text_encoder: Any, tokenizer: Any, sched_cfg: dict, *, model_id: str,
           device: str | torch.device, cache_dir: Any, encode_resolution: int | None, channels_last: bool,
           compile: bool | str) -> StableDiffusionDenoiser:
    try:  # SDPA attention (torch >= 2): diffusers' AttnProcessor2_0
        from diffusers.models.attention_processor import AttnProcessor2_0
        unet.set_attn_processor(AttnProcessor2_0())
    except Exception:  # noqa: BLE001 -- older/newer diffusers pick SDPA by default anyway
        pass
    schedule = VPSchedule.from_config(sched_cfg)
    den = StableDiffusionDenoiser(unet, vae, text_encoder, tokenizer, schedule, model_id=model_id,
                                  cache_dir=cache_dir, encode_resolution=encode_resolution,
                                  channels_last=channels_last)
    den = den.to(device)
    if compile:
        den.unet = torch.compile(den.unet, backend="inductor" if compile is True else str(compile), dynamic=True)
    return den


def _model_hash(root: Path, config: str | os.PathLike | None, cache_dir: str | os.PathLike | None | bool) -> str:
    """Content hash of what was loaded: the five component folders of a diffusers folder, or the single file and
    the component configs of `config` (msdfast.content_hash; per-file digests memoised in the cache)."""
    from ..content_hash import content_hash, file_digest, hash_bytes

    memo = None if cache_dir is False else Path(cache_dir or default_cache_dir()) / "content_hash"
    if root.is_file():
        cfg = Path(config)   # type: ignore[arg-type]
        parts = [file_digest(root, memo_dir=memo)] + [f"{s}/{f}:{file_digest(cfg / s / f)}"
                                                      for s, fs in _REQUIRED.items() for f in fs]
    else:
        parts = [f"{s}:{content_hash(root / s, memo_dir=memo)}" for s in _REQUIRED]
    return hash_bytes(*parts)


def _read_scheduler_config(path: Path) -> dict[str, Any]:
    """The diffusers scheduler config; UserInputError naming the file when it is not JSON, empty, or lacks the
    noise schedule (an empty config would silently give a default schedule the model was not trained with)."""
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserInputError(f"{path}: not a readable JSON scheduler config ({type(e).__name__})") from None
    if not isinstance(cfg, dict) or not any(k in cfg for k in ("beta_schedule", "trained_betas", "beta_start")):
        raise UserInputError(f"{path}: the scheduler config names no noise schedule (beta_schedule, beta_start/"
                             "beta_end or trained_betas); copy the model's scheduler_config.json")
    return cfg


def _check_folder_configs(root: Path) -> None:
    if not root.is_dir():
        raise FileNotFoundError(f"config: folder {str(root)!r} does not exist")
    missing = [f"{s}/{f}" for s, fs in _REQUIRED.items() for f in fs if not (root / s / f).exists()]
    if missing:
        raise FileNotFoundError(f"config: {str(root)!r} lacks {', '.join(missing)}")
