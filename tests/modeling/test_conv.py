"""sam3d.modeling.conv: the oneDNN path equals F.conv3d (values and gradients) and is taken."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

from sam3d.modeling.conv import Conv3d, _OneDnnConv3d, conv3d, torch_takes_slow_conv3d

CASES = [  # input, weight, padding, groups, bias
    ((1, 16, 12, 12, 12), (2, 16, 3, 3, 3), 1, 1, False),  # the decoder's last conv, small
    ((1, 8, 6, 7, 8), (5, 8, 3, 3, 3), 1, 1, True),  # not cubic, with a bias
    ((2, 5, 6, 6, 6), (3, 5, 3, 3, 3), 1, 1, True),  # batch 2: the weight gradient sums it
    ((2, 6, 5, 5, 5), (6, 1, 3, 3, 3), 1, 6, True),  # depthwise (the adapters)
    ((1, 12, 4, 4, 4), (4, 12, 1, 1, 1), 0, 1, False),  # 1×1×1 (neck, upsample_conv3d)
    ((1, 4, 5, 5, 5), (6, 2, 3, 3, 3), (0, 1, 2), 2, False),  # grouped, mixed padding
    ((1, 3, 5, 5, 5), (3, 3, 1, 1, 3), (0, 0, 1), 1, True),  # the adapters' slice kernels
]


def _pair(case, seed=0):
    shape, wshape, padding, groups, with_bias = case
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    w = torch.randn(wshape, generator=g)
    b = torch.randn(wshape[0], generator=g) if with_bias else None
    return x, w, b, padding, groups


def _leaves(*tensors):
    return [None if t is None else t.detach().clone().requires_grad_() for t in tensors]


def _onednn(x, w, b, padding, groups):
    return _OneDnnConv3d.apply(x, w, b, (padding,) * 3 if isinstance(padding, int) else padding,
                               groups)


@pytest.mark.parametrize("fn", [conv3d, _onednn], ids=["conv3d", "onednn"])
@pytest.mark.parametrize("case", CASES)
def test_values_and_gradients_equal_f_conv3d(case, fn):
    x, w, b, padding, groups = _pair(case)
    ref = _leaves(x, w, b)
    out_ref = F.conv3d(ref[0], ref[1], ref[2], 1, padding, 1, groups)
    (out_ref.square() * 0.5).sum().backward()
    ours = _leaves(x, w, b)
    out = fn(ours[0], ours[1], ours[2], padding, groups)
    (out.square() * 0.5).sum().backward()
    assert out.shape == out_ref.shape
    for a, r in zip([out] + [t.grad for t in ours if t is not None],
                    [out_ref] + [t.grad for t in ref if t is not None], strict=True):
        assert a.shape == r.shape
        assert (a - r).abs().max() <= 1e-5 * r.abs().max()


def _kernels(fn, *leaves):
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn(*leaves).sum().backward()
    return {e.key for e in prof.key_averages()}


RULE = [  # input, weight, groups: around each clause of torch's size rule
    ((1, 20, 32, 32, 8), (4, 20, 3, 3, 3), 1),  # C·D·H = 20,480: slow
    ((1, 21, 32, 32, 8), (4, 21, 3, 3, 3), 1),  # 21,504: oneDNN
    ((2, 4, 8, 8, 8), (4, 4, 3, 3, 3), 1),  # batch 2
    ((1, 4, 8, 8, 8), (4, 2, 3, 3, 3), 2),  # grouped
    ((1, 4, 8, 8, 8), (4, 4, 5, 5, 5), 1),  # kernel above 3
    ((1, 4, 8, 8, 8), (4, 4, 1, 1, 1), 1),  # 1×1, small
    ((1, 96, 16, 16, 4), (8, 96, 1, 1, 1), 1),  # 1×1, large
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", RULE)
def test_the_size_rule_is_torch_s(case, threads):
    shape, wshape, groups = case
    x, w = torch.randn(shape, requires_grad=True), torch.randn(wshape, requires_grad=True)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        slow = "aten::slow_conv3d_forward" in _kernels(
            lambda a, c: F.conv3d(a, c, None, 1, 0, 1, groups), x, w)
        predicted = torch_takes_slow_conv3d(x, w, groups)
        ours = _kernels(lambda a, c: conv3d(a, c, None, 0, groups), x, w)
    finally:
        torch.set_num_threads(before)
    assert slow == predicted
    assert not {k for k in ours if "slow_conv3d" in k}  # never the slow kernel


def test_the_onednn_kernel_is_taken_where_torch_would_take_slow_conv3d():
    x, w, b, padding, groups = _pair(CASES[0])
    slow = _kernels(lambda a, c: F.conv3d(a, c, None, 1, 1), *_leaves(x, w))
    fast = _kernels(lambda a, c: conv3d(a, c, None, 1), *_leaves(x, w))
    assert "aten::slow_conv3d_forward" in slow  # torch's size rule (see module)
    assert "aten::mkldnn_convolution" in fast
    assert not {k for k in fast if "slow_conv3d" in k}


def test_other_cases_are_f_conv3d_itself():
    x, w, b, padding, groups = _pair(CASES[1])
    assert torch.equal(conv3d(x.double(), w.double(), b.double(), padding, groups),
                       F.conv3d(x.double(), w.double(), b.double(), 1, padding, 1, groups))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 training: torch's autocast cast
        ours = conv3d(x, w, b, padding, groups)
        ref = F.conv3d(x, w, b, 1, padding, 1, groups)
    assert ours.dtype == torch.bfloat16 and torch.equal(ours, ref)
    strided = Conv3d(8, 5, 3, stride=2, padding=1)
    plain = nn.Conv3d(8, 5, 3, stride=2, padding=1)
    plain.load_state_dict(strided.state_dict())
    assert torch.equal(strided(x), plain(x))


def test_the_module_is_nn_conv3d_with_the_same_state_dict():
    torch.manual_seed(0)
    ours, plain = Conv3d(8, 5, 3, padding=1), nn.Conv3d(8, 5, 3, padding=1)
    assert isinstance(ours, nn.Conv3d)
    assert list(ours.state_dict()) == list(plain.state_dict())
    plain.load_state_dict(ours.state_dict())
    x = torch.randn(1, 8, 6, 6, 6)
    assert (ours(x) - plain(x)).abs().max() <= 1e-5 * plain(x).abs().max()


def test_bad_padding_is_refused():
    x, w, _, _, _ = _pair(CASES[0])
    with pytest.raises(ValueError, match="one int or three"):
        conv3d(x, w, None, (1, 1))
