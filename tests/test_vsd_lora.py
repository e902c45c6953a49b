"""VSD as ProlificDreamer ships it on Stable Diffusion (msdfast.estimators.vsd_lora), on the tiny random SD:
eps_phi is a peft LoRA of the UNet's attention with a camera embedding, equal to the frozen UNet exactly at step 0;
a step changes only the LoRA and camera parameters; resume is bit-exact; the toy keeps its small MLP."""
from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from msdfast.estimators import build  # noqa: E402
from msdfast.estimators.vsd import VariationalNet  # noqa: E402
from msdfast.estimators.vsd_lora import LORA_RANK, LoRAVariationalUNet  # noqa: E402


@pytest.fixture(scope="module")
def tiny(den):  # noqa: ANN001, ANN201
    """The tiny random SD denoiser of conftest.py."""
    return den


def _inputs(tiny, B: int = 2, seed: int = 0):  # noqa: ANN001, ANN202
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 4, 8, 8, generator=g)
    p = tiny.prompt_embeddings("a red apple")
    cams = torch.eye(4).repeat(B, 1, 1) + 0.1 * torch.randn(B, 4, 4, generator=g)
    return x, p.cond.expand(B, -1, -1), p.uncond.expand(B, -1, -1), cams


def test_lora_structure_and_exact_equality_at_step_zero(tiny) -> None:  # noqa: ANN001
    phi = LoRAVariationalUNet(tiny)
    names = list(phi.trainable())
    lora = [n for n in names if "lora_" in n]
    assert lora and all(any(f".{m}.lora_" in n for m in ("to_q", "to_k", "to_v", "to_out.0")) for n in lora)
    assert {n for n in names if n not in lora} == {"class_embedding.linear_1.weight", "class_embedding.linear_1.bias",
                                                   "class_embedding.linear_2.weight", "class_embedding.linear_2.bias"}
    a = [p for n, p in phi.trainable().items() if "lora_A" in n]
    assert all(p.shape[0] == LORA_RANK for p in a)
    n_attn = sum(1 for n, _ in tiny.unet.named_modules() if n.endswith(("to_q", "to_k", "to_v", "to_out.0")))
    assert len(lora) == 2 * n_attn                      # A and B on every attention projection
    # the copy shares the pretrained weights (no second UNet) and leaves the denoiser's UNet untouched
    assert phi.unet.conv_in.weight is tiny.unet.conv_in.weight and tiny.unet.class_embedding is None
    assert type(tiny.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q) is torch.nn.Linear
    x, cond, _, cams = _inputs(tiny)
    t = torch.tensor([3, 900])
    with torch.no_grad():
        frozen = tiny.eps(x, t, cond)
        for cam in (None, cams):
            assert torch.equal(phi(x, t, cond, cam), frozen)   # exact: LoRA B = 0 and camera output layer = 0


def test_estimator_uses_lora_on_sd_and_mlp_on_the_toy(tiny) -> None:  # noqa: ANN001
    x, cond, uncond, cams = _inputs(tiny)
    est = build("vsd", tiny, guidance_scale=7.5)
    est.set_camera(cams)
    est(x, cond, uncond, generator=torch.Generator().manual_seed(1))
    assert est.lora and isinstance(est.optimizer, torch.optim.AdamW)
    assert est.optimizer.defaults["lr"] == 1e-4 and est.optimizer.defaults["betas"] == (0.9, 0.99)
    from estimator_helpers import small_gmm
    from msdfast.denoisers.gmm import GMMDenoiser
    toy = build("vsd", GMMDenoiser(small_gmm()))
    toy(torch.zeros(3, 2), generator=torch.Generator().manual_seed(0))
    assert isinstance(toy.phi, VariationalNet) and not toy.lora
    with pytest.raises(ValueError, match="camera"):
        est.set_camera(torch.zeros(2, 3, 3))


def test_a_step_changes_only_lora_and_camera_parameters(tiny) -> None:  # noqa: ANN001
    x, cond, uncond, cams = _inputs(tiny)
    frozen = {n: p.detach().clone() for n, p in tiny.unet.named_parameters()}
    est = build("vsd", tiny, guidance_scale=7.5)
    est.set_camera(cams)
    gen = torch.Generator().manual_seed(2)
    est(x, cond, uncond, generator=gen)                # step 0: g from eps_phi == UNet, then one AdamW step
    before = {n: p.detach().clone() for n, p in est.phi.unet.named_parameters()}
    out = est(x, cond, uncond, generator=gen)
    assert torch.isfinite(out.grad).all() and out.info["phi_loss"] is not None
    for n, p in tiny.unet.named_parameters():
        assert torch.equal(p, frozen[n]), n            # the pretrained UNet never moves
    changed = {n for n, p in est.phi.unet.named_parameters() if not torch.equal(p, before[n])}
    trainable = set(est.phi.trainable())
    assert changed and changed <= trainable
    assert any("lora_B" in n for n in changed) and any(n.startswith("class_embedding.") for n in changed)
    # after training eps_phi differs from the frozen UNet
    with torch.no_grad():
        t = torch.tensor([500, 500])
        assert not torch.equal(est.phi(x, t, cond, cams), tiny.eps(x, t, cond))


def test_resume_is_bit_exact(tiny) -> None:  # noqa: ANN001
    x, cond, uncond, cams = _inputs(tiny)

    def run(est, gen, n):  # noqa: ANN001, ANN202
        outs = []
        for k in range(n):
            est.update_step(k, 10)
            outs.append(est(x, cond, uncond, generator=gen).grad)
        return outs

    full = build("vsd", tiny, guidance_scale=7.5)
    full.set_camera(cams)
    gen = torch.Generator().manual_seed(3)
    run(full, gen, 2)
    state, gen_state = copy.deepcopy(full.state_dict()), gen.get_state()
    assert set(state["phi"]) == set(full.phi.trainable()) and state["optimizer"]["state"]
    tail = run(full, gen, 2)

    resumed = build("vsd", tiny, guidance_scale=7.5)
    resumed.set_camera(cams)
    resumed.load_state_dict(copy.deepcopy(state))
    gen2 = torch.Generator().manual_seed(99)
    gen2.set_state(gen_state)
    resumed.update_step(0, 10)
    again = [resumed(x, cond, uncond, generator=gen2).grad]
    resumed.update_step(1, 10)
    again.append(resumed(x, cond, uncond, generator=gen2).grad)
    for a, b in zip(tail, again):
        assert torch.equal(a, b)
    for (n, p), q in zip(full.phi.trainable().items(), resumed.phi.trainable().values()):
        assert torch.equal(p, q), n
