"""The text-to-3D field: cameras (look-at frames, pixel rays, view buckets) and the NeRF's volume rendering,
against closed forms (ray-sphere chords, constant-density opacity) and a per-sample loop of NeRF eq. 3."""
from __future__ import annotations

import math

import pytest
import torch

from msdfast.fields.cameras import (CameraRanges, fixed_cameras, look_at, ray_bundle, sample_cameras, view_index,
                                    view_suffixes)
from msdfast.fields.nerf import NeRF, composite, sphere_intersect

SMALL_GRID = {"otype": "HashGrid", "n_levels": 4, "n_features_per_level": 2, "log2_hashmap_size": 12,
              "base_resolution": 4, "per_level_scale": 1.5}


# ---------------------------------------------------------------------------------------------- cameras
def test_look_at_is_a_right_handed_orthonormal_frame_looking_at_the_origin() -> None:
    eye = torch.tensor([[2.0, 0.0, 0.0], [0.3, -1.2, 0.8], [0.0, 0.0, 1.5]])   # last: straight down (degenerate)
    c2w = look_at(eye)
    R = c2w[:, :3, :3]
    torch.testing.assert_close(R.transpose(1, 2) @ R, torch.eye(3).expand(3, 3, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(-R[:, :, 2], torch.nn.functional.normalize(-eye, dim=-1), atol=1e-6, rtol=0)
    torch.testing.assert_close(c2w[:, :3, 3], eye)
    assert R[0, 2, 1] > 0.99   # camera "up" is world +z for a level camera


def test_camera_position_formula_and_view_buckets() -> None:
    cams = fixed_cameras([0.0, 90.0, 180.0, -90.0], elevation=30.0, distance=2.0, fovy=60.0)
    e = math.radians(30.0)
    want = torch.tensor([[2 * math.cos(e), 0.0, 2 * math.sin(e)], [0.0, 2 * math.cos(e), 2 * math.sin(e)],
                         [-2 * math.cos(e), 0.0, 2 * math.sin(e)], [0.0, -2 * math.cos(e), 2 * math.sin(e)]])
    torch.testing.assert_close(cams.c2w[:, :3, 3], want, atol=1e-5, rtol=0)
    assert view_index(cams).tolist() == [1, 0, 2, 0]   # front, side, back, side
    assert view_suffixes(cams) == ["front view", "side view", "back view", "side view"]
    assert view_index(fixed_cameras([0.0], elevation=70.0)).tolist() == [3]   # overhead


def test_pixel_rays_are_unit_centred_and_span_the_field_of_view() -> None:
    fovy, H, W = 60.0, 8, 12
    cams = fixed_cameras([25.0], elevation=10.0, distance=3.0, fovy=fovy)
    o, d = ray_bundle(cams, H, W)
    assert o.shape == d.shape == (1, H, W, 3)
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(1, H, W), atol=1e-6, rtol=0)
    fwd = -cams.c2w[0, :3, 2]
    # the two central pixels straddle the optical axis symmetrically
    mid = torch.nn.functional.normalize(d[0, H // 2 - 1, W // 2 - 1] + d[0, H // 2, W // 2], dim=-1)
    torch.testing.assert_close(mid, fwd, atol=1e-6, rtol=0)
    # the top and bottom pixel centres sit (H - 1) / H of the way to the vertical half-angle
    up = cams.c2w[0, :3, 1]
    top = torch.atan2(d[0, 0].mean(0) @ up, d[0, 0].mean(0) @ fwd)
    want = math.atan((H - 1) / H * math.tan(math.radians(fovy) / 2))
    assert abs(float(top) - want) < 1e-3   # mean over a row of unit vectors: tiny horizontal shrinkage only
    torch.testing.assert_close(o, cams.c2w[:, None, None, :3, 3].expand_as(o))


def test_sample_cameras_reproducible_and_in_range() -> None:
    ranges = CameraRanges(elevation_range=(-10.0, 45.0), azimuth_range=(-180.0, 180.0),
                          distance_range=(1.5, 2.0), fovy_range=(40.0, 70.0))
    a = sample_cameras(256, ranges, generator=torch.Generator().manual_seed(1))
    b = sample_cameras(256, ranges, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a.c2w, b.c2w, rtol=0, atol=0)
    for v, (lo, hi) in ((a.elevation, ranges.elevation_range), (a.azimuth, ranges.azimuth_range),
                        (a.distance, ranges.distance_range), (a.fovy, ranges.fovy_range)):
        assert v.min() >= lo and v.max() <= hi and v.max() - v.min() > 0.8 * (hi - lo)
    torch.testing.assert_close(a.c2w[:, :3, 3].norm(dim=-1), a.distance, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kw, name", [({"elevation_range": (50.0, 10.0)}, "elevation_range"),
                                      ({"distance_range": (0.0, 1.0)}, "distance_range"),
                                      ({"fovy_range": (10.0, 190.0)}, "fovy_range")])
def test_bad_camera_ranges_name_the_argument(kw: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        sample_cameras(2, CameraRanges(**kw))


# ---------------------------------------------------------------------------------------------- rendering
def test_sphere_intersection_chords() -> None:
    o = torch.tensor([[0.0, 0.0, -3.0], [0.0, 0.6, -3.0], [0.0, 1.5, -3.0], [0.0, 0.0, 0.0]])
    d = torch.tensor([[0.0, 0.0, 1.0]]).expand(4, 3)
    t0, t1 = sphere_intersect(o, d, 1.0)
    torch.testing.assert_close(t0, torch.tensor([2.0, 3.0 - 0.8, 3.0, 0.0]), atol=1e-6, rtol=0)  # miss: t0 = t1
    torch.testing.assert_close(t1 - t0, torch.tensor([2.0, 1.6, 0.0, 1.0]), atol=1e-6, rtol=0)  # 2 sqrt(R^2 - b^2)


def _loop_composite(sigma, rgb, t, delta, bg):  # noqa: ANN001, ANN202
    """NeRF eq. 3 one sample at a time with a running transmittance (the textbook form)."""
    R, N = sigma.shape
    color, opac = torch.zeros(R, 3, dtype=torch.float64), torch.zeros(R, 1, dtype=torch.float64)
    T = torch.ones(R, 1, dtype=torch.float64)
    d = delta.expand(R, N)
    for i in range(N):
        a = 1 - torch.exp(-sigma[:, i:i + 1] * d[:, i:i + 1])
        color += T * a * rgb[:, i]
        opac += T * a
        T = T * (1 - a)
    return color + (1 - opac) * bg, opac


def test_composite_matches_the_per_sample_loop() -> None:
    g = torch.Generator().manual_seed(0)
    R, N = 7, 13
    sigma = torch.rand(R, N, generator=g, dtype=torch.float64) * 5
    rgb = torch.rand(R, N, 3, generator=g, dtype=torch.float64)
    delta = torch.rand(R, 1, generator=g, dtype=torch.float64) * 0.3
    t = torch.cumsum(delta.expand(R, N), -1)
    bg = torch.rand(R, 3, generator=g, dtype=torch.float64)
    out = composite(sigma, rgb, t, delta, bg)
    want_rgb, want_opac = _loop_composite(sigma, rgb, t, delta, bg)
    torch.testing.assert_close(out["rgb"], want_rgb, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out["opacity"], want_opac, rtol=1e-12, atol=1e-12)


class _ConstantNeRF(NeRF):
    """A NeRF whose field is sigma = const, albedo = c inside the sphere (renderer test double)."""

    def __init__(self, sigma: float, albedo: tuple[float, float, float], bg: tuple[float, float, float],
                 **kw) -> None:  # noqa: ANN003
        super().__init__(grid=SMALL_GRID, implementation="torch", **kw)
        self.s, self.c, self.bg = sigma, torch.tensor(albedo), torch.tensor(bg)

    def density_albedo(self, x: torch.Tensor):  # noqa: ANN201
        return torch.full_like(x[:, 0], self.s), self.c.expand(x.shape[0], 3)

    def background(self, d: torch.Tensor) -> torch.Tensor:
        return self.bg.expand(d.shape[0], 3)


@pytest.mark.parametrize("stratified", [False, True])
def test_render_of_a_constant_density_ball_matches_the_closed_form(stratified: bool) -> None:
    sigma, R = 1.7, 0.8
    nerf = _ConstantNeRF(sigma, (0.9, 0.2, 0.1), (0.0, 0.5, 1.0), radius=R, n_samples=11)
    cams = fixed_cameras([0.0, 130.0], elevation=20.0, distance=2.5, fovy=50.0)
    o, d = ray_bundle(cams, 9, 9)
    out = nerf.render(o, d, stratified=stratified, generator=torch.Generator().manual_seed(0))
    # chord of each ray through the ball: 2 sqrt(R^2 - b^2), b the ray's distance from the centre
    b2 = (o.cross(d, dim=-1) ** 2).sum(-1)
    chord = 2 * torch.sqrt((R * R - b2).clamp_min(0))
    want_opac = 1 - torch.exp(-sigma * chord)
    assert (chord == 0).any() and (chord > 0).any()   # the view has rays that miss and rays that hit
    torch.testing.assert_close(out["opacity"][..., 0], want_opac, atol=1e-5, rtol=0)
    want_rgb = want_opac[..., None] * nerf.c + (1 - want_opac[..., None]) * nerf.bg
    torch.testing.assert_close(out["rgb"], want_rgb, atol=1e-5, rtol=0)
    assert out["rgb"].shape == (2, 9, 9, 3) and out["depth"].shape == (2, 9, 9, 1)


def test_nerf_field_init_blob_and_gradients() -> None:
    torch.manual_seed(0)
    nerf = NeRF(grid=SMALL_GRID, implementation="torch", n_samples=8, seed=0)
    x = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.9]])
    sigma, albedo = nerf.density_albedo(x)
    assert sigma[0] > 5 * sigma[1]            # the density blob: an object in the middle at init
    assert albedo.min() > 0 and albedo.max() < 1
    o, d = ray_bundle(fixed_cameras([0.0], distance=2.0), 6, 6)
    out = nerf.render(o, d, generator=torch.Generator().manual_seed(0))
    out["rgb"].sum().backward()
    grads = {n: p.grad for n, p in nerf.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["encoding.params"].abs().sum() > 0 and grads["bg_mlp.0.weight"].abs().sum() > 0


def test_nerf_fits_a_target_view() -> None:
    """Renderer + hash grid + MLPs are trainable end to end: fitting one view's colours cuts the error 10x."""
    torch.manual_seed(0)
    nerf = NeRF(grid=SMALL_GRID, implementation="torch", n_samples=16, seed=0)
    o, d = ray_bundle(fixed_cameras([0.0], distance=2.0), 12, 12)
    target = torch.zeros(1, 12, 12, 3)
    target[..., :6, :, 0] = 1.0      # red top half, blue bottom half
    target[..., 6:, :, 2] = 1.0
    opt = torch.optim.Adam(nerf.parameters(), lr=2e-2)
    errs = []
    for _ in range(150):
        loss = ((nerf.render(o, d, stratified=False)["rgb"] - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        errs.append(float(loss.detach()))
    assert errs[-1] < 0.1 * errs[0], (errs[0], errs[-1])


@pytest.mark.parametrize("kw, name", [({"radius": 0.0}, "radius"), ({"n_samples": 0}, "n_samples"),
                                      ({"density_activation": "relu"}, "density_activation"),
                                      ({"density_bias": "cube"}, "density_bias")])
def test_bad_nerf_arguments_name_the_argument(kw: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        NeRF(grid=SMALL_GRID, implementation="torch", **kw)


def test_render_rejects_mismatched_rays() -> None:
    nerf = NeRF(grid=SMALL_GRID, implementation="torch")
    with pytest.raises(ValueError, match="rays_o"):
        nerf.render(torch.zeros(2, 3), torch.zeros(3, 3))
