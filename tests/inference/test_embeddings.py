"""Window embeddings reused across clicks (:mod:`sam3d.inference.embeddings`) and the
predictor's interactive "objects" boxes: the same logits as a fresh forward pass, one encoder
pass per window."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam3d.build import build_sam3d
from sam3d.data.specs import get_spec
from sam3d.inference.embeddings import EmbeddingCache
from sam3d.inference.predictor import Predictor
from sam3d.inference.roi import crop_roi, paste_roi


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_sam3d("tiny").eval()


def _counting(model):
    calls = []
    handle = model.image_encoder.register_forward_hook(lambda m, a, o: calls.append(1))
    return calls, handle


def test_cache_gives_fresh_logits_and_encodes_each_window_once(model) -> None:
    c = model.crop
    gen = torch.Generator().manual_seed(0)
    volume, other = torch.randn(2, 1, 3, c, c, c, generator=gen)
    a = torch.tensor([[[10.0, 20.0, 30.0]]])
    b = torch.tensor([[[40.0, 12.0, 5.0], [3.0, 3.0, 3.0]]])
    with torch.no_grad():
        fresh = [model(volume, a), model(volume, b), model(other, a)]
        cache = EmbeddingCache(model)
        calls, handle = _counting(model)
        cached = [cache.logits(volume, a), cache.logits(volume, b), cache.logits(other, a)]
        handle.remove()
    assert all(torch.equal(x, y) for x, y in zip(fresh, cached, strict=True))
    assert not torch.equal(cached[0], cached[1])  # the clicks still matter
    assert len(calls) == 2 and cache.stats == {"hits": 1, "misses": 2} and len(cache) == 2


def test_budget_drops_the_oldest_window(model) -> None:
    c = model.crop
    volumes = torch.randn(3, 1, 3, c, c, c)
    pts = torch.tensor([[[1.0, 2.0, 3.0]]])
    with torch.no_grad():
        one = model.encode(volumes[0]).nbytes()
        cache = EmbeddingCache(model, max_bytes=2 * one)
        for v in volumes:
            cache.logits(v, pts)
        assert len(cache) == 2
        cache.logits(volumes[0], pts)  # dropped: encoded again
    assert cache.stats == {"hits": 0, "misses": 4}
    with pytest.raises(ValueError, match="max_bytes"):
        EmbeddingCache(model, max_bytes=-1)


def test_models_without_encode_or_in_training_are_called_as_they_are() -> None:
    class Stub(torch.nn.Module):
        def forward(self, volume, points):
            return volume * 2

    cache = EmbeddingCache(Stub())
    assert torch.equal(cache.logits(torch.ones(1, 2), None), torch.full((1, 2), 2.0))
    assert cache.stats == {"hits": 0, "misses": 0} and not cache.usable
    assert not EmbeddingCache(build_sam3d("tiny").train()).usable


def test_objects_mode_fixes_a_box_per_object_and_only_decodes_follow_up_clicks(model) -> None:
    c = model.crop
    predictor = Predictor(model, get_spec("lits"))
    image = torch.randn(3, 2 * c, c, c, generator=torch.Generator().manual_seed(2))
    calls, handle = _counting(model)
    first = np.array([[20, 30, 30]])
    with torch.no_grad():
        p1 = predictor.probabilities(image, first, "objects")
        assert len(calls) == 1 and [b.start for b in predictor.boxes] == [(20 - c // 2, -2, -2)]
        inside = np.array([[20, 30, 30], [30, 40, 25]])  # the second click lies in the box
        p2 = predictor.probabilities(image, inside, "objects")
        assert len(calls) == 1 and len(predictor.boxes) == 1  # decode only
        far = np.array([[20, 30, 30], [30, 40, 25], [110, 30, 30]])  # outside: a new box
        p3 = predictor.probabilities(image, far, "objects")
        assert len(calls) == 2 and len(predictor.boxes) == 2
        # each box is a fresh forward pass of its own window and clicks (a new predictor)
        ref = Predictor(model, get_spec("lits"))
        want = ref.probabilities(image, first, "roi")
        want_far = ref.probabilities(image, far[2:], "roi")
    handle.remove()
    assert torch.equal(p1, want)  # one click: the official box (centred on it)
    assert not torch.equal(p1, p2)
    assert torch.equal(p3, torch.maximum(p2, want_far))  # the maximum over the two boxes
    with pytest.raises(ValueError, match="at least one click"):
        predictor.probabilities(image, np.zeros((0, 3)), "objects")


@pytest.fixture(scope="module")
def extension() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_sam3d("tiny_interactive").eval()


def test_negative_clicks_join_their_objects_boxes_and_only_decode(extension) -> None:
    """A negative click inside an object's box joins that box's prompt (one decode, no
    encoder pass) and equals the model's own labelled forward pass; one in no box, a negative
    click alone and bad labels are refused."""
    c = extension.crop
    predictor = Predictor(extension, get_spec("lits"))
    image = torch.randn(3, 2 * c, c, c, generator=torch.Generator().manual_seed(2))
    calls, handle = _counting(extension)
    clicks = np.array([[20, 30, 30], [30, 40, 25]])
    with torch.no_grad():
        pos = predictor.probabilities(image, clicks, "objects")
        neg = predictor.probabilities(image, clicks, "objects", labels=[1, 0])
        assert len(calls) == 1 and len(predictor.boxes) == 1
        box = predictor.boxes[0]
        rel = torch.as_tensor(clicks - np.array(box.start), dtype=torch.float32)[None]
        want = torch.softmax(extension(crop_roi(image, box)[None], rel,
                                       torch.tensor([[1, 0]])), 1)[0, 1]
        # the roi and sliding modes take the same labels (the box is placed by the positive)
        assert torch.equal(predictor.probabilities(image, clicks, "roi", [1, 0]), neg)
    handle.remove()
    assert not torch.equal(pos, neg)
    assert torch.equal(paste_roi(want, box, image.shape[1:]), neg)
    with pytest.raises(ValueError, match="lies in no object's box"):
        predictor.probabilities(image, np.array([[20, 30, 30], [110, 30, 30]]), "objects",
                                [1, 0])
    with pytest.raises(ValueError, match="negative click alone"):
        predictor.probabilities(image, clicks, "sliding", [0, 0])
    for bad in ([1], [1, 2], [1.0, 0.0], "10"):
        with pytest.raises(ValueError, match="one per click"):
            predictor.probabilities(image, clicks, "objects", bad)


def test_a_paper_model_refuses_negative_clicks_before_any_work(model) -> None:
    predictor = Predictor(model, get_spec("lits"))
    image = torch.zeros(3, model.crop, model.crop, model.crop)
    calls, handle = _counting(model)
    with pytest.raises(ValueError, match="negative_clicks=False"):
        predictor.probabilities(image, np.array([[5, 5, 5], [6, 6, 6]]), "objects", [1, 0])
    handle.remove()
    assert calls == [] and not predictor.negative_clicks
