"""The assembled model: shapes, batching, switches, prompt handling and input checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sam3d import build_sam3d
from sam3d.modeling.sam3d import normalise_points


@pytest.fixture(scope="module")
def outputs(randomise):
    """Logits of one tiny model for batch 2 and each item alone, C = 3 and C = 1."""
    torch.manual_seed(0)
    model = randomise(build_sam3d("tiny")).eval()
    gen = torch.Generator().manual_seed(1)
    volume = torch.randn(2, 3, 64, 64, 64, generator=gen)
    points = torch.tensor(
        [[[10.0, 20.0, 30.0], [33.0, 5.0, 60.0]], [[40.0, 50.0, 12.0], [7.0, 7.0, 7.0]]]
    )
    single = volume[:, :1].expand(-1, 3, -1, -1, -1).contiguous()
    with torch.no_grad():
        return {
            "c3_b2": model(volume, points),
            "c3_b1": [model(volume[i : i + 1], points[i : i + 1]) for i in range(2)],
            "c1_b2": model(volume[:, :1], points),
            "c1_as_c3_b2": model(single, points),
            "c1_b1": model(volume[:1, :1], points[:1]),
        }


@pytest.mark.parametrize("key", ["c3_b2", "c1_b2", "c1_b1"])
def test_output_shape(outputs, key: str) -> None:
    logits = outputs[key]
    assert logits.shape == (logits.shape[0], 2, 64, 64, 64)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_batch_equals_single_items(outputs) -> None:
    for i in range(2):
        torch.testing.assert_close(
            outputs["c3_b2"][i : i + 1], outputs["c3_b1"][i], atol=1e-5, rtol=0
        )
    assert (outputs["c3_b2"][0] - outputs["c3_b2"][1]).abs().max() > 1e-2  # items really differ
    torch.testing.assert_close(outputs["c1_b2"][:1], outputs["c1_b1"], atol=1e-5, rtol=0)


def test_single_channel_equals_repeated(outputs) -> None:
    torch.testing.assert_close(outputs["c1_b2"], outputs["c1_as_c3_b2"], atol=1e-5, rtol=0)


def test_clicks_change_the_output(tiny_model, tiny_inputs) -> None:
    volume, points = tiny_inputs
    with torch.no_grad():
        a = tiny_model(volume[:1], points[:1])
        b = tiny_model(volume[:1], (points[:1] + 4.0).clamp(max=63.0))
        c = tiny_model(volume[:1], points[:1].to(torch.int64))  # integer voxel indices accepted
    assert (a - b).abs().max() > 1e-3
    torch.testing.assert_close(a, c, atol=0, rtol=0)


def test_grad_checkpointing_same_gradients(tiny_inputs) -> None:
    volume, points = tiny_inputs
    volume, points = volume[:1], points[:1]
    torch.manual_seed(0)
    model = build_sam3d("tiny").train()
    label = (volume[:, 0] > 0.5).long()
    grads = []
    for flag in (False, True):
        model.grad_checkpointing = flag
        assert model.image_encoder.grad_checkpointing is flag
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(volume, points), label).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    tuned = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(grads[0]) == set(grads[1]) == tuned
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, atol=1e-6, rtol=1e-5, msg=name)


def test_bf16_autocast(tiny_model, tiny_inputs) -> None:
    """The caller's autocast (the trainer's, the benchmark's) sets the precision; the model
    returns float32 logits either way."""
    from sam3d.engine.precision import autocast

    volume, points = tiny_inputs
    volume, points = volume[:1, :1], points[:1]
    with torch.no_grad():
        ref = tiny_model(volume, points)
        with autocast("cpu", True):
            low = tiny_model(volume, points)
        with autocast("cpu", False):
            same = tiny_model(volume, points)
    assert torch.equal(same, ref)
    assert low.dtype == torch.float32 and low.shape == ref.shape
    assert torch.isfinite(low).all()
    assert (low - ref).abs().max() < 0.1 * ref.abs().max()
    assert (low.argmax(1) == ref.argmax(1)).float().mean() > 0.9


def test_prompt_free_model(tiny_inputs) -> None:
    volume, _ = tiny_inputs
    torch.manual_seed(0)
    model = build_sam3d("tiny", prompt_levels=()).eval()
    assert len(model.prompt_encoders) == 0
    with torch.no_grad():
        logits = model(volume)
        again = model(volume, torch.zeros(2, 5, 3))  # points are ignored
    assert logits.shape == (2, 2, 64, 64, 64)
    torch.testing.assert_close(logits, again, atol=0, rtol=0)


def test_prompt_on_every_level(tiny_inputs) -> None:
    volume, points = tiny_inputs
    torch.manual_seed(0)
    model = build_sam3d("tiny", prompt_levels=(1, 2, 3, 4)).eval()
    assert list(model.prompt_encoders) == ["1", "2", "3", "4"]
    with torch.no_grad():
        a = model(volume[:1], points[:1])
        b = model(volume[:1], points[:1].flip(-1))
    assert a.shape == (1, 2, 64, 64, 64)
    assert (a - b).abs().max() > 1e-3


def test_prompt_encoder_samples_the_clicked_cell(tiny_model) -> None:
    """End to end: a click at voxel (d, h, w) samples feature cell (h/4, w/4, d/4)."""
    captured = {}
    hook = tiny_model.prompt_encoders["4"].register_forward_pre_hook(
        lambda mod, args: captured.update(features=args[0], grid=args[1])
    )
    kd, kh, kw = 9, 2, 13
    points = torch.tensor([[[4 * kd + 1.5, 4 * kh + 1.5, 4 * kw + 1.5]]])  # cell centres
    with torch.no_grad():
        tiny_model(torch.randn(1, 1, 64, 64, 64), points)
    hook.remove()
    feats, grid = captured["features"], captured["grid"]
    sampled = F.grid_sample(feats, grid.reshape(1, 1, 1, -1, 3), align_corners=False)
    torch.testing.assert_close(sampled[0, :, 0, 0, 0], feats[0, :, kh, kw, kd], atol=1e-6, rtol=0)


def test_normalise_points() -> None:
    points = torch.tensor([[[0.0, 10.0, 63.0], [31.5, 0.0, 7.0]]])  # (d, h, w)
    n = normalise_points(points, (64, 64, 64))
    d, h, w = points.unbind(-1)
    expected = torch.stack([(p + 0.5) * 2 / 64 - 1 for p in (d, w, h)], -1)  # (d, w, h)
    torch.testing.assert_close(n, expected)
    # non-cubic sizes: each column uses its own axis length
    n2 = normalise_points(torch.tensor([[[3.0, 5.0, 7.0]]]), (8, 16, 32))
    torch.testing.assert_close(n2, torch.tensor([[[7 / 8 - 1, 15 / 32 - 1, 11 / 16 - 1]]]))


@pytest.mark.parametrize(
    ("volume_shape", "points", "match"),
    [
        ((3, 64, 64, 64), [[[1.0, 1.0, 1.0]]], r"B×C×D×H×W"),
        ((1, 3, 32, 32, 32), [[[1.0, 1.0, 1.0]]], r"D = H = W = 64"),
        ((1, 3, 64, 64, 48), [[[1.0, 1.0, 1.0]]], r"got shape \(1, 3, 64, 64, 48\)"),
        ((1, 2, 64, 64, 64), [[[1.0, 1.0, 1.0]]], r"C in \(1, 3\)"),
        ((1, 3, 64, 64, 64), None, r"promptable"),
        ((1, 3, 64, 64, 64), [[1.0, 1.0, 1.0]], r"B×N×3"),
        ((1, 3, 64, 64, 64), [[[1.0, 1.0]]], r"B×N×3"),
        ((1, 3, 64, 64, 64), [[[1.0, 1.0, 1.0]], [[1.0, 1.0, 1.0]]], r"B = 1"),
        ((1, 3, 64, 64, 64), torch.zeros(1, 0, 3), r"N ≥ 1"),
    ],
)
def test_bad_inputs(tiny_model, volume_shape, points, match: str) -> None:
    volume = torch.zeros(volume_shape)
    if points is not None and not isinstance(points, torch.Tensor):
        points = torch.tensor(points)
    with pytest.raises(ValueError, match=match):
        tiny_model(volume, points)


def test_the_model_reads_no_value() -> None:
    """Shape checks only: a forward with clicks and labels runs on the meta device, where any
    value read (``.all()``, ``.item()``, a data-dependent branch) raises — so it makes no host
    synchronisation in the training loop. Values are checked at the boundaries
    (tests/inference/test_predictor.py, tests/data/test_io.py)."""
    from sam3d import build_sam3d

    with torch.device("meta"):
        model = build_sam3d("tiny_interactive").eval()
        volume = torch.empty(2, 1, 64, 64, 64)
        points = torch.empty(2, 3, 3)
        labels = torch.empty(2, 3, dtype=torch.long)
    with torch.no_grad():
        out = model(volume, points, labels)
    assert out.device.type == "meta" and out.shape == (2, 2, 64, 64, 64)


def test_labels_are_checked_for_shape_and_kind(tiny_model) -> None:
    from sam3d import build_sam3d

    volume, points = torch.zeros(1, 1, 64, 64, 64), torch.tensor([[[1.0, 2.0, 3.0]]])
    with pytest.raises(ValueError, match="no negative-click extension.*labels=None"):
        tiny_model(volume, points, torch.ones(1, 1, dtype=torch.long))
    interactive = build_sam3d("tiny_interactive").eval()
    with pytest.raises(ValueError, match=r"labels must be B×N = \(1, 1\)"):
        interactive(volume, points, torch.ones(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="integers 0 .* got dtype torch.float32"):
        interactive(volume, points, torch.ones(1, 1))


def test_points_on_the_border_are_accepted(tiny_model) -> None:
    with torch.no_grad():
        out = tiny_model(torch.zeros(1, 1, 64, 64, 64), torch.tensor([[[0.0, 63.0, 63.0]]]))
    assert out.shape == (1, 2, 64, 64, 64)
