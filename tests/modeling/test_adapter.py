"""The spatial adapter (sam3d.modeling.adapter): its forward equals an independent NumPy/SciPy
evaluation of ``x + relu(W_up · relu(dwconv(relu(W_down · x))))``, the depthwise 3×3×3
convolution runs over the token grid's own axes (X, Y, Z) with zero padding, the residual
branch only adds non-negative values, and bad widths are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from sam3d.modeling.adapter import SpatialAdapter


def _relu(a: np.ndarray) -> np.ndarray:
    return np.maximum(a, 0.0)


def _reference(adapter: SpatialAdapter, x: torch.Tensor) -> np.ndarray:
    """The adapter in float64 NumPy: dense layers as matrix products, the depthwise convolution
    as one SciPy correlation per channel (zero outside the grid)."""
    p = {k: v.detach().double().numpy() for k, v in adapter.state_dict().items()}
    xs = x.double().numpy()
    h = _relu(xs @ p["linear1.weight"].T + p["linear1.bias"])
    conv = np.empty_like(h)
    for b in range(h.shape[0]):
        for c in range(h.shape[-1]):
            conv[b, ..., c] = ndimage.correlate(h[b, ..., c], p["conv.weight"][c, 0],
                                                mode="constant", cval=0.0) + p["conv.bias"][c]
    return xs + _relu(_relu(conv) @ p["linear2.weight"].T + p["linear2.bias"])


def test_forward_matches_an_independent_evaluation() -> None:
    torch.manual_seed(0)
    adapter = SpatialAdapter(dim=6, bottleneck=3)
    x = torch.randn(2, 4, 5, 3, 6)  # B×X×Y×Z×dim, every axis a different length
    with torch.no_grad():
        out = adapter(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_allclose(out.double().numpy(), _reference(adapter, x), rtol=1e-5,
                               atol=1e-5)


def _probe(axis_weight: tuple[int, int, int]) -> SpatialAdapter:
    """dim 1, bottleneck 1, every layer the identity except the kernel: one tap at
    ``axis_weight`` (kernel index), so the branch is a shifted copy of relu(x)."""
    adapter = SpatialAdapter(dim=1, bottleneck=1)
    with torch.no_grad():
        for layer in (adapter.linear1, adapter.linear2):
            layer.weight.fill_(1.0)
            layer.bias.zero_()
        adapter.conv.weight.zero_()
        adapter.conv.weight[(0, 0, *axis_weight)] = 1.0
        adapter.conv.bias.zero_()
    return adapter


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_the_convolution_runs_along_the_grid_axes(axis: int) -> None:
    """A tap at kernel index 0 along one axis reads the previous voxel along that axis (and
    zero at the first one): a wrong permutation would shift along another axis."""
    shape = (4, 5, 6)
    ramp = np.arange(1, shape[axis] + 1, dtype=np.float32)
    grid = np.broadcast_to(ramp.reshape([-1 if a == axis else 1 for a in range(3)]), shape)
    x = torch.from_numpy(np.ascontiguousarray(grid))[None, ..., None]
    tap = [1, 1, 1]
    tap[axis] = 0
    with torch.no_grad():
        branch = (_probe(tuple(tap))(x) - x)[0, ..., 0].numpy()
    shifted = np.roll(grid, 1, axis=axis)
    np.moveaxis(shifted, axis, 0)[0] = 0.0  # zero padding, no wrap-around
    np.testing.assert_array_equal(branch, shifted)


def test_zero_padding_at_the_border() -> None:
    """An all-ones kernel over an all-ones grid counts each voxel's neighbours inside the grid:
    27 inside, 18 on a face, 12 on an edge, 8 at a corner."""
    adapter = _probe((1, 1, 1))
    with torch.no_grad():
        adapter.conv.weight.fill_(1.0)
        branch = (adapter(torch.ones(1, 3, 3, 3, 1)) - 1.0)[0, ..., 0]
    assert branch[1, 1, 1] == 27 and branch[0, 1, 1] == 18
    assert branch[0, 0, 1] == 12 and branch[0, 0, 0] == 8 and branch[2, 2, 2] == 8


def test_the_residual_branch_only_adds() -> None:
    """The ReLU after the up-projection (official code): with an up-projection that makes
    the branch negative, the adapter is the identity."""
    torch.manual_seed(1)
    adapter = SpatialAdapter(dim=4, bottleneck=2)
    x = torch.randn(1, 3, 3, 3, 4)
    with torch.no_grad():
        adapter.linear2.weight.copy_(-adapter.linear2.weight.abs())
        adapter.linear2.bias.fill_(-1.0)
        assert torch.equal(adapter(x), x)
        out = SpatialAdapter(dim=4, bottleneck=2)(x)
    assert bool((out >= x).all())


def test_widths_and_parameter_count() -> None:
    adapter = SpatialAdapter(dim=8, bottleneck=4)
    # depthwise: one 3×3×3 kernel per bottleneck channel, not bottleneck² of them
    assert adapter.conv.weight.shape == (4, 1, 3, 3, 3)
    assert sum(p.numel() for p in adapter.parameters()) == 8 * 4 + 4 + 4 * 27 + 4 + 4 * 8 + 8
    for bad in ({"dim": 0, "bottleneck": 4}, {"dim": 8, "bottleneck": -1},
                {"dim": 8.0, "bottleneck": 4}, {"dim": 8, "bottleneck": True}):
        name = next(k for k, v in bad.items() if not (type(v) is int and v > 0))
        with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
            SpatialAdapter(**bad)
