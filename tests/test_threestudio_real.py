"""msdfast-guidance inside the REAL threestudio (../shared/ext/threestudio, commit 28d9d80) on tiny SD, CPU.

threestudio's own code runs everywhere it can on a CPU (tests/threestudio_harness.py says what is stubbed):
launch.py's load_custom_modules() loads integrations/threestudio from a `custom/` folder; each stock YAML is read
with threestudio's load_config with ONLY `system.guidance_type` swapped (plus the environment: the tiny model
path instead of hub ids, a prompt, the prompt processor's spawn off); the system class is threestudio's, built by
its own __init__/configure (geometry, material, background and renderer are CPU stand-ins registered under the
YAML's type names: the real ones need tinycudann/nerfacc/nvdiffrast), and its training_step runs 2 steps.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

import threestudio_harness as harness
from msdfast.errors import UserInputError
from msdfast.testing.tiny_sd import tiny_sd_path

pytestmark = pytest.mark.skipif(not harness.available(), reason=f"threestudio not found at {harness.ROOT}")

REPO = Path(__file__).resolve().parents[1]
SD_TYPES = ("stable-diffusion-guidance", "stable-diffusion-sdi-guidance", "stable-diffusion-vsd-guidance")
LATENT_SYSTEMS = ("latentnerf-system", "sjc-system")   # their renderers output SD latents (rgb_as_latents)
NEEDS_DATA = {"sketchshape.yaml": "guide_shape mesh file under load/", "sketchshape-refine.yaml": "guide_shape "
              "mesh file under load/", "dreamfusion-sd-eff.yaml": "its data module's efficiency masks (not simulated)"}
NOT_HONOURED = {"hifa.yaml": "use_img_loss", "prolificdreamer-hifa.yaml": "use_img_loss",
                "prolificdreamer-scene-hifa.yaml": "use_img_loss"}


def _stock_configs() -> list[str]:
    if not harness.available():
        return []
    import yaml
    out = []
    for f in sorted((harness.ROOT / "configs").rglob("*.yaml")):
        d = yaml.safe_load(f.read_text())
        if d.get("system_type") and (d.get("system") or {}).get("guidance_type") in SD_TYPES:
            out.append(str(f.relative_to(harness.ROOT / "configs")))
    return out


# ---------------------------------------------------------------------------------------------- environment
class _Mesh:
    def normal_consistency(self) -> torch.Tensor:
        return torch.zeros(())

    def laplacian(self) -> torch.Tensor:
        return torch.zeros(())


class StandInRenderer(torch.nn.Module):
    """CPU stand-in of threestudio's renderers: a learnable image (or latent) plus the keys systems read."""

    channels = 3
    z_variance = True   # the real nerf renderer emits z_variance only where the config weighs it

    def __init__(self, cfg: Any = None, geometry: Any = None, material: Any = None, background: Any = None,
                 **kw: Any) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(7)
        self.image = torch.nn.Parameter(torch.randn(1, self.channels, 16, 16, generator=g) * 0.5)
        self.geometry, self.material, self.background = geometry, material, background

    def forward(self, height: int = 64, width: int = 64, elevation: torch.Tensor | None = None,
                **batch: Any) -> dict[str, Any]:
        B = elevation.shape[0]
        img = torch.nn.functional.interpolate(self.image, (height, width), mode="bilinear", align_corners=False)
        rgb = img.permute(0, 2, 3, 1).expand(B, -1, -1, -1)
        rgb = torch.sigmoid(rgb) if self.channels == 3 else rgb
        opacity = torch.sigmoid(rgb[..., :1] * 2)
        n = B * height * width
        normal = torch.nn.functional.normalize(torch.cat([rgb[..., :2], opacity], -1).reshape(n, 3), dim=-1)
        extra = {"z_variance": opacity * 0.1} if self.z_variance else {}
        return {**extra, "comp_rgb": rgb, "opacity": opacity, "depth": opacity * 2,
                "comp_normal": (normal.reshape(B, height, width, 3) + 1) / 2, "weights": opacity.reshape(n, 1),
                "normal": normal, "t_dirs": torch.nn.functional.normalize(torch.ones(n, 3), dim=-1),
                "points": torch.zeros(n, 3), "density": opacity.reshape(n, 1), "mesh": _Mesh()}


class StandInPart(torch.nn.Module):
    """Geometry/material/background stand-in (threestudio's need CUDA-only packages)."""

    def __init__(self, cfg: Any = None, *a: Any, **kw: Any) -> None:
        super().__init__()

    def do_update_step(self, *a: Any, **k: Any) -> None:
        pass


def _register_stand_ins(ts: Any, cfg: Any) -> None:
    s = cfg.system
    for key, cls in (("geometry_type", StandInPart), ("material_type", StandInPart),
                     ("background_type", StandInPart), ("renderer_type", StandInRenderer)):
        name = s.get(key)
        if name and name not in ts.__modules__:
            ts.__modules__[name] = cls


@pytest.fixture(scope="module")
def ts_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """threestudio imported, the extension loaded by launch.py's load_custom_modules (twice: idempotent)."""
    ts = harness.load()
    work = tmp_path_factory.mktemp("threestudio-work")
    (work / "custom").mkdir()
    os.symlink(REPO / "integrations" / "threestudio", work / "custom" / "msdfast-threestudio")
    old = os.getcwd()
    os.chdir(work)
    launch = harness.launch_module()
    launch.load_custom_modules()
    first = ts.__modules__["msdfast-guidance"]
    launch.load_custom_modules()  # a second import registers nothing new and raises nothing
    assert ts.__modules__["msdfast-guidance"] is first
    model = tiny_sd_path(root=tmp_path_factory.getbasetemp())
    os.environ["MSDFAST_CACHE"] = str(work / "msdfast-cache")
    yield {"ts": ts, "work": work, "model": str(model)}
    os.chdir(old)


def load_stock(env: dict[str, Any], rel: str, extra: list[str] | None = None, guidance_type: str = "msdfast-guidance",
               configs_root: Path | None = None) -> Any:
    """threestudio's load_config of a stock YAML with guidance_type swapped, and the environment overrides."""
    from omegaconf import OmegaConf
    from threestudio.utils.config import load_config
    path = (configs_root or harness.ROOT / "configs") / rel
    raw = OmegaConf.load(path)
    cli = [f"system.guidance_type={guidance_type}",
           f"system.guidance.pretrained_model_name_or_path={env['model']}",
           f"system.prompt_processor.pretrained_model_name_or_path={env['model']}",
           "system.prompt_processor.prompt=a hamburger", "system.prompt_processor.spawn=false",
           "use_timestamp=false", "tag=test", f"exp_root_dir={env['work'] / 'outputs'}"]
    for key in ("geometry_convert_from", "weights"):  # later stages: the previous stage's checkpoint (none here)
        if key in list(raw.system.keys()) and OmegaConf.is_missing(raw.system, key):
            cli.append(f"system.{key}=null")
    if "pretrained_model_name_or_path_lora" in raw.system.guidance:
        cli.append(f"system.guidance.pretrained_model_name_or_path_lora={env['model']}")
    return load_config(str(path), cli_args=cli + list(extra or []))


def build_system(env: dict[str, Any], cfg: Any) -> Any:
    """threestudio's system class built by its own __init__ (configure), then on_fit_start."""
    ts = env["ts"]
    _register_stand_ins(ts, cfg)
    StandInRenderer.channels = 4 if cfg.system_type in LATENT_SYSTEMS and not cfg.system.get("refinement") else 3
    StandInRenderer.z_variance = "lambda_z_variance" in cfg.system.loss
    system = ts.find(cfg.system_type)(cfg.system)
    system.on_fit_start()
    return system


def make_batch(B: int = 1, seed: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    return {"elevation": torch.rand(B, generator=g) * 30, "azimuth": torch.rand(B, generator=g) * 360 - 180,
            "camera_distances": torch.full((B,), 1.5), "height": 64, "width": 64,
            "c2w": torch.eye(4)[None].expand(B, -1, -1), "mvp_mtx": torch.eye(4)[None].expand(B, -1, -1),
            "light_positions": torch.ones(B, 3), "camera_positions": torch.ones(B, 3)}


def train(system: Any, steps: int, start: int = 0, opt: torch.optim.Optimizer | None = None) -> tuple[list, Any]:
    """The Lightning loop around threestudio's training_step: update_step, training_step, backward, step."""
    opt = opt or torch.optim.Adam(system.renderer.parameters(), lr=0.05)
    losses = []
    for step in range(start, start + steps):
        system.global_step = step
        system.do_update_step(0, step)
        out = system.training_step(make_batch(seed=step), step)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].detach())
    return losses, opt


# ---------------------------------------------------------------------------------------------- the tests
def test_registered_object_is_not_a_module_and_keeps_sd_out_of_the_system(ts_env) -> None:  # noqa: ANN001
    cfg = load_stock(ts_env, "dreamfusion-sd.yaml")
    system = build_system(ts_env, cfg)
    assert not isinstance(system.guidance, torch.nn.Module)
    assert not any("unet" in k or "vae" in k for k in system.state_dict())  # SD stays out of checkpoints
    assert system.guidance.loss_key == "loss_sds" and system.guidance.method == "sds"
    system.guidance.set_min_max_steps(0.1, 0.5)
    assert (system.guidance.min_step, system.guidance.max_step) == (100, 500)
    assert (system.guidance.estimator.t_min, system.guidance.estimator.t_max) == (100, 500)
    img = system.guidance.decode_latents(torch.zeros(2, 4, 3, 3))  # threestudio's signature; default latent size
    assert img.shape == (2, 3, 64, 64)


@pytest.mark.slow  # ~30 stock configs x (load + 2 steps) on tiny SD
def test_every_stock_sd_config_trains_two_steps_with_only_guidance_type_swapped(ts_env) -> None:  # noqa: ANN001
    results: dict[str, str] = {}
    for rel in _stock_configs():
        if Path(rel).name in NEEDS_DATA:
            results[rel] = f"skipped: {NEEDS_DATA[Path(rel).name]}"
            continue
        try:
            cfg = load_stock(ts_env, rel)
        except Exception as e:  # noqa: BLE001 -- the stock YAML itself does not load in threestudio
            from omegaconf.errors import OmegaConfBaseException
            if not isinstance(e, OmegaConfBaseException):
                raise
            results[rel] = f"skipped: threestudio's load_config fails on the stock file ({type(e).__name__})"
            continue
        system_mod = {"image-condition-dreamfusion-system": "threestudio.systems.imagedreamfusion",
                      "fantasia3d-system": "threestudio.models.guidance.controlnet_guidance"}.get(cfg.system_type)
        if system_mod in harness.UNAVAILABLE:
            results[rel] = f"skipped: system {harness.UNAVAILABLE[system_mod]}"
            continue
        if cfg.system_type not in ts_env["ts"].__modules__:
            results[rel] = f"skipped: {cfg.system_type} not imported"
            continue
        if Path(rel).name in NOT_HONOURED:
            with pytest.raises(UserInputError, match=f"guidance.{NOT_HONOURED[Path(rel).name]}"):
                build_system(ts_env, cfg)
            results[rel] = f"one-line error naming {NOT_HONOURED[Path(rel).name]}"
            continue
        extra = ["system.prompt_processor.use_perp_neg=false"] if cfg.system.prompt_processor.get(
            "use_perp_neg") else []
        if extra:  # Perp-Neg: a one-line error naming the option, then the run without it
            system = build_system(ts_env, cfg)
            with pytest.raises(UserInputError, match="use_perp_neg"):
                train(system, 1)
            cfg = load_stock(ts_env, rel, extra)
        system = build_system(ts_env, cfg)
        losses, _ = train(system, 2)
        key = system.guidance.loss_key
        assert key.replace("loss_", "lambda_") in cfg.system.loss, rel
        assert all(torch.isfinite(v) for v in losses), rel
        assert any(k == f"train/{key}" for k in system.logged), rel
        img = system.renderer.image
        assert img.grad is not None and torch.isfinite(img.grad).all() and img.grad.abs().sum() > 0, rel
        results[rel] = (f"ok: {system.guidance.method} {key} nfe {int(system.logged['train/nfe'])} loss "
                        f"{float(losses[0]):.4g} -> {float(losses[1]):.4g}")
    report = "\n".join(f"{k}: {v}" for k, v in results.items())
    print("\n" + report)
    out = os.environ.get("MSDFAST_THREESTUDIO_REPORT")
    if out:
        Path(out).write_text(report + "\n")
    ran = [k for k, v in results.items() if v.startswith("ok")]
    for must in ("dreamfusion-sd.yaml", "magic3d-coarse-sd.yaml", "magic3d-refine-sd.yaml", "sdi.yaml",
                 "prolificdreamer.yaml", "latentnerf.yaml", "sjc.yaml"):
        assert must in ran, (must, report)


METHOD_CONFIGS = ["sds.yaml", "sdi.yaml", "asd.yaml", "vsd.yaml", "dsd.yaml", "msd.yaml"]


@pytest.mark.parametrize("name", METHOD_CONFIGS)
def test_shipped_method_configs_train(ts_env, name: str) -> None:  # noqa: ANN001
    cfg = load_stock(ts_env, name, configs_root=REPO / "integrations" / "threestudio" / "configs",
                     extra=["system.guidance.estimator.steps=2"] if name == "msd.yaml" else
                     ["system.guidance.estimator.ddim_steps=2"] if name == "dsd.yaml" else
                     ["system.guidance.inversion_n_steps=2", "system.prompt_processor.use_perp_neg=false"]
                     if name == "sdi.yaml" else [])
    system = build_system(ts_env, cfg)
    assert system.guidance.method == name.split(".")[0]
    losses, _ = train(system, 2)
    assert all(torch.isfinite(v) for v in losses)
    assert system.renderer.image.grad.abs().sum() > 0


def test_sdi_system_test_info_and_guidance_eval_keys(ts_env) -> None:  # noqa: ANN001
    """threestudio's SDI system's validation_step reads test_info's keys; guidance_evaluation_save eval's keys."""
    cfg = load_stock(ts_env, "sdi.yaml", ["system.prompt_processor.use_perp_neg=false",
                                          "system.guidance.inversion_n_steps=2", "system.guidance.n_ddim_steps=4"])
    system = build_system(ts_env, cfg)
    system.do_update_step(0, 0)
    out = system(make_batch(B=2))
    b = make_batch(B=2)
    with torch.no_grad():
        info = system.guidance(out["comp_rgb"], system.prompt_processor(), **b, rgb_as_latents=False, test_info=True)
    for k in ("target", "noisy_img", "noise_img"):
        assert info[k].shape == (64, 64, 3), k
    assert info["target_latent"].shape == (2, 4, 8, 8) and info["noise_pred"].shape[1:] == (4, 8, 8)
    ev = system.guidance(out["comp_rgb"], system.prompt_processor(), **b, guidance_eval=True)["eval"]
    assert ev["bs"] == 2 and len(ev["texts"]) == 2 and len(ev["noise_levels"]) == 2
    for k in ("imgs_noisy", "imgs_1step", "imgs_1orig", "imgs_final"):
        assert ev[k].shape == (2, 64, 64, 3), k


def test_stock_keys_map_or_fail_in_one_line(ts_env) -> None:  # noqa: ANN001
    from msdfast.adapters.threestudio import translate_config
    st = translate_config({"guidance_scale": 100.0, "weighting_strategy": "fantasia3d",
                           "min_step_percent": [0, 0.5, 0.02, 1000], "max_step_percent": 0.98})
    assert (st["method"], st["loss_key"], st["w"], st["estimator"]["weighting"]) == ("sds", "loss_sds", 101.0,
                                                                                       "fantasia3d")
    st = translate_config({"pretrained_model_name_or_path_lora": "x", "pretrained_model_name_or_path": "x",
                           "guidance_scale": 7.5, "lora_n_timestamp_samples": 2})
    assert (st["method"], st["loss_key"], st["w"], st["estimator"]["phi_batch"]) == ("vsd", "loss_vsd", 7.5, 2)
    st = translate_config({"enable_sdi": True, "inversion_guidance_scale": -7.5, "inversion_n_steps": 3,
                           "inversion_eta": 0.3})
    assert (st["method"], st["loss_key"], st["estimator"]["inversion_guidance_scale"],
            st["estimator"]["inversion_steps"]) == ("sdi", "loss_sdi", -6.5, 3)
    assert translate_config({"enable_sdi": False})["method"] == "sds"
    st = translate_config({"use_sjc": True, "var_red": True})
    assert (st["method"], st["estimator"]["weighting"]) == ("sds", "uniform")
    for bad, key in (({"use_img_loss": True}, "use_img_loss"), ({"use_sjc": True, "var_red": False}, "var_red"),
                     ({"token_merging": True}, "token_merging"), ({"t_anneal": False}, "t_anneal"),
                     ({"pretrained_model_name_or_path_lora": "a", "pretrained_model_name_or_path": "b"},
                      "pretrained_model_name_or_path_lora"), ({"guidance_scale_lora": 7.5}, "guidance_scale_lora"),
                     ({"weighting_strategy": "nope"}, "weighting_strategy"), ({"nonsense": 1}, "nonsense"),
                     ({"enable_sdi": True, "guidance_scale_lora": 1.0}, "guidance"),
                     ({"method": "msd", "pretrained_model_name_or_path_lora": "a"}, "guidance")):
        with pytest.raises(UserInputError, match=key) as e:
            translate_config(bad)
        assert "\n" not in str(e.value)


def test_threestudio_schedule_interpreter_is_used(ts_env) -> None:  # noqa: ANN001
    from omegaconf import OmegaConf
    from threestudio.utils.misc import C as ts_C_raw

    from msdfast.adapters.threestudio import C, _local_C

    def ts_C(v: Any, *a: Any) -> float:  # threestudio's C reads lists as OmegaConf containers (as in its configs)
        return ts_C_raw(v if isinstance(v, (int, float)) else OmegaConf.create(v), *a)

    for value, ep, step in (([0, 0.98, 0.5, 100], 0, 50), ([0, 1.0, 0.1, 10, 0.01, 20], 0, 15),
                            ([1.0, 0.0, 100], 0, 200), ([0, 1.0, 0.0, 10.0], 5, 999), (0.3, 0, 0)):
        assert C(value, ep, step) == pytest.approx(ts_C(value, ep, step))
        assert _local_C(value, ep, step) == pytest.approx(ts_C(value, ep, step))
    assert _local_C([0, 1.0, 0.01, 10], 0, 5, "exp") == pytest.approx(ts_C([0, 1.0, 0.01, 10], 0, 5, "exp"))


def test_sds_matches_threestudio_stable_diffusion_guidance(ts_env) -> None:  # noqa: ANN001
    """Same stock block, same global RNG: msdfast-guidance's loss and gradient equal threestudio's own."""
    ts = ts_env["ts"]
    block = {"pretrained_model_name_or_path": ts_env["model"], "guidance_scale": 100.0, "half_precision_weights":
             False, "weighting_strategy": "sds", "min_step_percent": 0.02, "max_step_percent": 0.98}
    theirs = ts.find("stable-diffusion-guidance")(block)
    # threestudio draws randn_like(latents), which follows the VAE output's channels-last strides on CPU; msdfast
    # draws a contiguous randn. Contiguous latents make both draw the SAME noise tensor (same values, same order).
    encode = theirs.encode_images
    theirs.encode_images = lambda imgs: encode(imgs).contiguous()
    ours = ts.find("msdfast-guidance")({**block, "encode_resolution": 512})  # threestudio resizes to 512 always
    cfg = load_stock(ts_env, "dreamfusion-sd.yaml")
    pu = ts.find(cfg.system.prompt_processor_type)(cfg.system.prompt_processor)()
    b = make_batch(B=2, seed=3)
    cams = (b["elevation"], b["azimuth"], b["camera_distances"])
    for step in (0, 7):
        theirs.update_step(0, step), ours.update_step(0, step)
        grads, losses = [], []
        for g in (theirs, ours):
            rgb = torch.rand(2, 32, 32, 3, generator=torch.Generator().manual_seed(step)).requires_grad_()
            torch.manual_seed(100 + step)
            out = g(rgb, pu, *cams)
            out["loss_sds"].backward()
            grads.append(rgb.grad)
            losses.append(out["loss_sds"].detach())
            assert out["min_step"] == 20 and out["max_step"] == 980
        torch.testing.assert_close(losses[1], losses[0], rtol=2e-5, atol=0)
        scale = grads[0].abs().max()
        assert scale > 0
        # fp32 rounding: the loss agrees to ~1e-6 relative; through the VAE encoder's backward the gradient
        # agrees to ~1e-5 of its largest entry (a sign or factor-2 error would be O(1) of it)
        torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=float(scale) * 2e-5)


@pytest.mark.parametrize("method", ["dsd", "vsd"])
def test_resume_from_a_threestudio_checkpoint_is_exact(ts_env, tmp_path: Path, method: str) -> None:  # noqa: ANN001
    """4 steps straight == 2 steps, Lightning-style checkpoint to disk, fresh system, 2 more steps."""
    extra = [f"system.guidance.method={method}", "system.guidance.seed=11"]
    extra += ["system.guidance.estimator.ddim_steps=2"] if method == "dsd" else []
    rel = "dreamfusion-sd.yaml"

    def fresh() -> Any:
        torch.manual_seed(0)
        return build_system(ts_env, load_stock(ts_env, rel, extra))

    straight = fresh()
    ref, _ = train(straight, 4)

    first = fresh()
    _, opt = train(first, 2)
    ckpt = {"state_dict": first.state_dict(), "optimizer_states": [opt.state_dict()], "global_step": 2}
    first.on_save_checkpoint(ckpt)  # Lightning calls the system's hook; the extension adds the guidance's state
    assert "msdfast_guidance" in ckpt
    torch.save(ckpt, tmp_path / "last.ckpt")

    # Lightning's resume order: construct, on_load_checkpoint, load_state_dict, on_fit_start, on_train_start
    _register_stand_ins(ts_env["ts"], load_stock(ts_env, rel, extra))
    cfg = load_stock(ts_env, rel, extra)
    resumed = ts_env["ts"].find(cfg.system_type)(cfg.system, resumed=True)
    loaded = torch.load(tmp_path / "last.ckpt", weights_only=False)
    torch.manual_seed(12345)  # a different global RNG: resume must not depend on it
    resumed.on_load_checkpoint(loaded)
    resumed.load_state_dict(loaded["state_dict"])
    resumed.on_fit_start()
    resumed.on_train_start()
    opt2 = torch.optim.Adam(resumed.renderer.parameters(), lr=0.05)
    opt2.load_state_dict(loaded["optimizer_states"][0])
    torch.set_rng_state(torch.Generator().manual_seed(0).get_state())
    rest, _ = train(resumed, 2, start=2, opt=opt2)
    # the geometry/encoding RNG use is the stand-in's (none); the guidance draws from its own seeded generator
    torch.testing.assert_close(torch.stack(rest), torch.stack(ref[2:]), rtol=0, atol=0)
    torch.testing.assert_close(resumed.renderer.image, straight.renderer.image, rtol=0, atol=0)


@pytest.mark.parametrize("kind,block", [
    # (threestudio's SD/SDI guidance Configs type the percents as float; schedules: test_threestudio_schedule_...)
    ("stable-diffusion-guidance", {"sqrt_anneal": True, "min_step_percent": 0.3, "max_step_percent": 0.98,
                                   "trainer_max_steps": 100}),
    ("stable-diffusion-guidance", {"min_step_percent": 0.1, "max_step_percent": 0.7}),
    ("stable-diffusion-sdi-guidance", {"t_anneal": True, "min_step_percent": 0.25, "max_step_percent": 0.98,
                                       "trainer_max_steps": 100, "enable_sdi": True}),
])
def test_t_schedules_follow_threestudio_update_step(ts_env, kind: str, block: dict) -> None:  # noqa: ANN001
    """min_step/max_step after threestudio's own update_step equal msdfast-guidance's, step by step."""
    ts = ts_env["ts"]
    base = {"pretrained_model_name_or_path": ts_env["model"], "half_precision_weights": False}
    theirs = ts.find(kind)({**base, **block})
    ours = ts.find("msdfast-guidance")({**base, **block, **({"estimator": {"inversion_steps": 1}}
                                                           if "enable_sdi" in block else {})})
    for step in (0, 1, 9, 10, 30, 49, 50, 79, 80, 100):
        theirs.update_step(0, step), ours.update_step(0, step)
        assert (ours.min_step, ours.max_step) == (theirs.min_step, theirs.max_step), step
        assert (ours.estimator.t_min, ours.estimator.t_max) == (theirs.min_step, min(theirs.max_step, 999))
