"""The occupancy grid (msdfast.fields.occupancy) and the NeRF's empty-space skipping: renders of a fixed trained
NeRF with the grid equal the dense sampler's within a stated tolerance, while evaluating far fewer samples."""
from __future__ import annotations

import pytest
import torch

from msdfast.fields.cameras import fixed_cameras, ray_bundle
from msdfast.fields.nerf import NeRF
from msdfast.fields.occupancy import OccupancyGrid

SMALL_GRID = {"otype": "HashGrid", "n_levels": 6, "n_features_per_level": 2, "log2_hashmap_size": 14,
              "base_resolution": 8, "per_level_scale": 1.6}
# Stated tolerance of the skipping sampler against the dense one on the trained NeRF below (max over pixels of
# |rgb difference| and |opacity difference|): the grid threshold, the optical depth one skipped sample may carry
# where the grid looked. Measured here: rgb ~5e-3, opacity ~6e-3. A wrong cell mapping (a grid shifted by
# 3 cells) skips real density and moves pixels by > 0.1.
RENDER_TOL = 1e-2


def _target_density(x: torch.Tensor) -> torch.Tensor:
    """An off-centre box and a ball: sigma 30 inside, 0 outside."""
    box = ((x - torch.tensor([0.25, -0.1, 0.0])).abs() < torch.tensor([0.2, 0.3, 0.15])).all(-1)
    ball = (x - torch.tensor([-0.3, 0.2, 0.1])).norm(dim=-1) < 0.25
    return 30.0 * (box | ball).float()


@pytest.fixture(scope="module")
def trained_nerf() -> NeRF:
    """A NeRF fitted (density regression, 300 Adam steps) to _target_density: a fixed trained field."""
    torch.manual_seed(0)
    nerf = NeRF(grid=SMALL_GRID, hidden=32, n_samples=64, density_activation="softplus", density_bias="none",
                seed=0, occupancy_resolution=32)
    opt = torch.optim.Adam(nerf.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    for _ in range(300):
        x = torch.rand(4096, 3, generator=gen) * 2 - 1
        sigma, _ = nerf.density_albedo(x)
        loss = ((sigma - _target_density(x)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    gen = torch.Generator().manual_seed(2)
    for _ in range(8):    # a run updates every 16 steps; the grid has seen many updates by then
        nerf.update_occupancy(generator=gen)
    return nerf.requires_grad_(False)


def test_cell_index_and_update_rule() -> None:
    grid = OccupancyGrid(radius=2.0, resolution=4, threshold=0.5, decay=0.5, step=1.0, dilate=0)
    # cell centres of the 4^3 cells over [-2, 2]^3 map back to their own (i, j, k)
    ijk = torch.tensor([[0, 0, 0], [3, 1, 2], [1, 3, 0]])
    centres = (ijk + 0.5) - 2.0
    assert grid.cell_index(centres).tolist() == [(i * 4 + j) * 4 + k for i, j, k in ijk.tolist()]
    assert grid.occupied(centres).all()                    # before any update: every cell occupied (dense)
    grid.update(lambda x: (x[:, 0] > 0).float() * 2.0)    # density 2 in the half x > 0
    assert grid.fraction_occupied() == 0.5
    grid.dilate = 1                                        # one cell of dilation: the slab i = 1 joins
    assert grid.fraction_occupied() == 0.75
    grid.dilate = 0
    grid.update(lambda x: torch.zeros(x.shape[0]))        # decaying maximum: 2 * 0.5 = 1 > 0.5 still occupied
    assert grid.fraction_occupied() == 0.5
    grid.update(lambda x: torch.zeros(x.shape[0]))        # 0.5 * step = 0.5, not above the threshold
    assert grid.fraction_occupied() == 0.0


def test_before_the_first_update_rendering_is_exactly_dense() -> None:
    nerf = NeRF(grid=SMALL_GRID, hidden=16, n_samples=16, seed=0, occupancy_resolution=8)
    o, d = ray_bundle(fixed_cameras([30.0], elevation=10.0, distance=2.0, fovy=100.0), 8, 8)   # corners miss
    a = nerf.render(o, d, generator=torch.Generator().manual_seed(0))
    b = nerf.render(o, d, generator=torch.Generator().manual_seed(0), skip_empty=False)
    torch.testing.assert_close(a["rgb"], b["rgb"], rtol=0, atol=0)
    assert a["samples_evaluated"] < 1.0   # rays missing the sphere are skipped even so


@pytest.mark.parametrize("stratified", [True, False])
def test_renders_of_a_trained_nerf_match_the_dense_sampler(trained_nerf: NeRF, stratified: bool) -> None:
    cams = fixed_cameras([0.0, 70.0, 200.0], elevation=20.0, distance=1.8, fovy=55.0)
    o, d = ray_bundle(cams, 32, 32)
    fast = trained_nerf.render(o, d, generator=torch.Generator().manual_seed(3), stratified=stratified)
    dense = trained_nerf.render(o, d, generator=torch.Generator().manual_seed(3), stratified=stratified,
                                skip_empty=False)
    assert dense["opacity"].max() > 0.9 and dense["opacity"].min() < 0.1   # the scene has objects and space
    assert fast["samples_evaluated"] < 0.25                                 # most samples skipped
    assert (fast["rgb"] - dense["rgb"]).abs().max() <= RENDER_TOL
    assert (fast["opacity"] - dense["opacity"]).abs().max() <= RENDER_TOL
    # the depth of visible pixels too (depth is a weighted t: scale by the chord length ~ 2)
    vis = dense["opacity"] > 0.5
    assert (fast["depth"] - dense["depth"])[vis].abs().max() <= 2 * RENDER_TOL


def test_a_grid_that_misses_density_is_caught(trained_nerf: NeRF) -> None:
    """The tolerance test can fail: a grid shifted by one cell along x skips real density."""
    shifted = NeRF(grid=SMALL_GRID, hidden=32, n_samples=64, density_activation="softplus", density_bias="none",
                   seed=0, occupancy_resolution=32)
    shifted.load_state_dict(trained_nerf.state_dict())
    shifted.occupancy.density.copy_(torch.roll(trained_nerf.occupancy.density, shifts=3, dims=0))
    o, d = ray_bundle(fixed_cameras([0.0, 70.0], elevation=20.0, distance=1.8, fovy=55.0), 32, 32)
    fast = shifted.render(o, d, stratified=False)
    dense = shifted.render(o, d, stratified=False, skip_empty=False)
    assert (fast["opacity"] - dense["opacity"]).abs().max() > 10 * RENDER_TOL


def test_gradients_reach_the_evaluated_samples_only() -> None:
    nerf = NeRF(grid=SMALL_GRID, hidden=16, n_samples=16, seed=0, occupancy_resolution=8)
    nerf.update_occupancy(generator=torch.Generator().manual_seed(0))   # the initial blob: the centre only
    assert 0 < nerf.occupancy.fraction_occupied() < 0.5
    o, d = ray_bundle(fixed_cameras([0.0], elevation=0.0, distance=2.0, fovy=50.0), 8, 8)
    nerf.render(o, d, generator=torch.Generator().manual_seed(1))["rgb"].sum().backward()
    assert nerf.encoding.params.grad.abs().sum() > 0 and nerf.mlp[0].weight.grad.abs().sum() > 0


def test_bad_grid_arguments_name_the_argument() -> None:
    with pytest.raises(ValueError, match="occupancy_resolution"):
        NeRF(grid=SMALL_GRID, occupancy_resolution=-1)
    with pytest.raises(ValueError, match="threshold"):
        OccupancyGrid(1.0, 8, threshold=-1.0)
