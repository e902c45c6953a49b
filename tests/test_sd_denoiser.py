"""The Stable Diffusion denoiser on the tiny random SD (CPU, offline)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from msdfast.denoisers.sd import load_stable_diffusion
from msdfast.prompts import PromptEmbeddings, view_direction
from msdfast.testing.tiny_sd import TINY_LATENT_SIZE, TINY_RENDER_SIZE, tiny_sd_path


def _inputs(n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 4, 8, 8, generator=g), torch.tensor([5, 400, 960][:n])


def test_missing_folder_and_parts_are_named(tmp_path: Path, root: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_stable_diffusion(tmp_path / "nope")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_sd_path(root=root), broken)
    shutil.rmtree(broken / "vae")
    (broken / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"vae/.*scheduler/scheduler_config.json"):
        load_stable_diffusion(broken)
    with pytest.raises(FileNotFoundError, match="config"):
        load_stable_diffusion(broken / "unet" / "config.json")  # a single file without config=
    with pytest.raises(ValueError, match="dtype"):
        load_stable_diffusion(tiny_sd_path(root=root), dtype="int8")


def test_batched_call_equals_per_sample_calls(den) -> None:  # noqa: ANN001
    z, t = _inputs()
    cond = den.encode_prompts(["a cat", "a dog", ""])
    den.stats.reset()
    batched = den.eps(z, t, cond)
    singles = torch.cat([den.eps(z[i:i + 1], t[i:i + 1], cond[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, singles, rtol=1e-4, atol=1e-5)
    assert [c.batch for c in den.stats.calls] == [3, 1, 1, 1] and den.stats.nfe == 6
    # the prediction depends on the text condition (cross-attention is wired)
    assert (den.eps(z, t, den.encode_prompts(["x"] * 3)) - batched).abs().max() > 1e-6


def test_eps_pair_is_one_call_of_2B(den) -> None:  # noqa: ANN001
    z, t = _inputs()
    pe = den.prompt_embeddings("a cat", "blurry")
    c, u = pe.cond.expand(3, -1, -1), pe.uncond.expand(3, -1, -1)
    den.stats.reset()
    ec, eu = den.eps_pair(z, t, c, u)
    assert [x.batch for x in den.stats.calls] == [6] and den.stats.nfe == 6
    torch.testing.assert_close(ec, den.eps(z, t, c), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(eu, den.eps(z, t, u), rtol=1e-4, atol=1e-5)
    assert (ec - eu).abs().max() > 1e-6  # cond and uncond really differ


def test_v_prediction_is_converted_to_eps(root: Path) -> None:
    dv = load_stable_diffusion(tiny_sd_path("v_prediction", root=root), cache_dir=False)
    assert dv.schedule.prediction_type == "v_prediction"
    z, t = _inputs()
    cond = dv.encode_prompts(["a cat"] * 3)
    with torch.no_grad():
        v = dv.unet(z, t, encoder_hidden_states=cond).sample
    a = dv.schedule.alpha(t).view(-1, 1, 1, 1)
    s = dv.schedule.sigma(t).view(-1, 1, 1, 1)
    torch.testing.assert_close(dv.eps(z, t, cond), a * v + s * z, rtol=1e-5, atol=1e-5)  # eps = alpha v + sigma z


def test_text_embeddings_cached_in_memory_and_on_disk(root: Path, tmp_path: Path) -> None:
    d1 = load_stable_diffusion(tiny_sd_path(root=root), cache_dir=tmp_path)
    calls = []
    d1.text_encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    e1 = d1.encode_prompts(["a cat", "a dog"])
    e2 = d1.encode_prompts(["a dog", "a cat", "a cat"])
    assert calls == [2]  # one encoder call for both prompts, none for the repeat
    torch.testing.assert_close(e2[1], e1[0], rtol=0, atol=0)
    assert len(list((tmp_path / "text_embeddings").glob("*/embedding.safetensors"))) == 2
    d2 = load_stable_diffusion(tiny_sd_path(root=root), cache_dir=tmp_path)
    d2.text_encoder.forward = None  # any text-encoder call would now fail: the disk cache must serve
    torch.testing.assert_close(d2.encode_prompts(["a cat"])[0], e1[0], rtol=0, atol=0)
    assert e1.shape == (2, 77, 32)


def test_vae_encode_follows_threestudio(den) -> None:  # noqa: ANN001
    rgb = torch.rand(2, 3, 24, 40, generator=torch.Generator().manual_seed(1), requires_grad=True)
    lat = den.encode_images(rgb, generator=torch.Generator().manual_seed(7))
    assert lat.shape == (2, 4, TINY_LATENT_SIZE, TINY_LATENT_SIZE)
    x = F.interpolate(rgb.detach(), (TINY_RENDER_SIZE, TINY_RENDER_SIZE), mode="bilinear", align_corners=False)
    post = den.vae.encode(x * 2 - 1).latent_dist
    ref = post.sample(generator=torch.Generator().manual_seed(7)) * den.vae.config.scaling_factor
    torch.testing.assert_close(lat.detach(), ref, rtol=1e-5, atol=1e-5)
    assert (lat.detach() - post.mean * den.vae.config.scaling_factor).abs().max() > 0  # a SAMPLE, not the mean
    lat.sum().backward()
    assert rgb.grad is not None and rgb.grad.abs().sum() > 0
    img = den.decode_latents(lat.detach())
    assert img.shape == (2, 3, TINY_RENDER_SIZE, TINY_RENDER_SIZE) and 0 <= img.min() and img.max() <= 1
    with pytest.raises(ValueError, match="rgb"):
        den.encode_images(torch.rand(1, 4, 8, 8))


def test_low_precision_weights(root: Path) -> None:
    d32 = load_stable_diffusion(tiny_sd_path(root=root), cache_dir=False)
    dbf = load_stable_diffusion(tiny_sd_path(root=root), cache_dir=False, dtype="bf16")
    assert dbf.dtype == torch.bfloat16
    assert dbf.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    z, t = _inputs()
    cond = d32.encode_prompts(["a cat"] * 3)
    e32, ebf = d32.eps(z, t, cond), dbf.eps(z, t, cond)
    assert ebf.dtype == torch.float32  # outputs come back in z's dtype
    assert (ebf - e32).abs().max() < 0.05 * e32.abs().max()


def test_view_dependent_prompts(den) -> None:  # noqa: ANN001
    ele = torch.tensor([0.0, 0.0, 0.0, 0.0, 70.0])
    azi = torch.tensor([90.0, 10.0, 170.0, -179.0 + 360.0, 10.0])
    assert view_direction(ele, azi).tolist() == [0, 1, 2, 2, 3]  # side, front, back, back (wrapped), overhead
    pe = den.prompt_embeddings("a cat", view_dependent=True)
    assert isinstance(pe, PromptEmbeddings)
    emb = pe.get_text_embeddings(ele, azi, torch.ones(5))
    assert emb.shape == (10, 77, 32)
    front = den.encode_prompts(["a cat, front view"])[0]
    torch.testing.assert_close(emb[1], front, rtol=0, atol=0)
    torch.testing.assert_close(emb[5:], pe.uncond.expand(5, -1, -1), rtol=0, atol=0)  # uncond second
    plain = pe.get_text_embeddings(ele, azi, None, view_dependent_prompting=False)
    torch.testing.assert_close(plain[0], pe.cond[0], rtol=0, atol=0)


@pytest.mark.slow  # dynamo tracing the diffusers UNet takes ~10-20 s on a 2-core CPU, even with backend "eager"
def test_compiled_unet_matches_eager(root: Path) -> None:
    eager = load_stable_diffusion(tiny_sd_path(root=root), cache_dir=False)
    comp = load_stable_diffusion(tiny_sd_path(root=root), cache_dir=False, compile="eager")
    z, t = _inputs()
    cond = eager.encode_prompts(["a cat"] * 3)
    torch.testing.assert_close(comp.eps(z, t, cond), eager.eps(z, t, cond), rtol=1e-5, atol=1e-5)
    assert comp.latent_size == eager.latent_size  # config still reachable through the compiled wrapper
