"""The negative-click extension: a label embedding on each click token, off by default.

A paper model (``negative_clicks=False``) behaves bit for bit as before; the extension loaded
from a paper checkpoint gives the paper's logits on positive clicks (its positive row is
zero); a negative click changes the logits; bad labels are refused with one clear line.
"""

from __future__ import annotations

import pytest
import torch
from test_checkpoint import official_from

from sam3d import build_sam3d
from sam3d.checkpoint import load_checkpoint, load_official_checkpoint, save_checkpoint
from sam3d.config import get_config


@pytest.fixture
def paper_and_extension(randomise):
    torch.manual_seed(0)
    paper = randomise(build_sam3d("tiny")).eval()
    torch.manual_seed(5)  # the extension's own initialisation underneath
    ext = load_official_checkpoint(official_from(paper), "tiny_interactive").eval()
    return paper, ext


def test_registered_extension_differs_only_by_the_switch() -> None:
    for base in ("tiny", "vit_b"):
        ext = get_config(f"{base}_interactive")
        assert ext.negative_clicks and not get_config(base).negative_clicks
        assert ext.replace(name=base, negative_clicks=False, description="") == \
            get_config(base).replace(description="")
    with pytest.raises(ValueError, match="negative_clicks needs a prompt encoder"):
        get_config("tiny").replace(prompt_levels=(), negative_clicks=True)
    with pytest.raises(ValueError, match="negative_clicks must be true or false"):
        get_config("tiny").replace(negative_clicks=1)


def test_paper_checkpoint_in_the_extension_gives_the_paper_logits(paper_and_extension,
                                                                  tiny_inputs) -> None:
    paper, ext = paper_and_extension
    volume, points = tiny_inputs
    table = ext.prompt_encoders["4"].label_embed.weight
    assert torch.equal(table[1], torch.zeros_like(table[1])) and table[0].abs().sum() > 0
    ones = torch.ones(points.shape[:2], dtype=torch.long)
    with torch.no_grad():
        want = paper(volume, points)
        assert torch.equal(ext(volume, points), want)
        assert torch.equal(ext(volume, points, ones), want)
        with pytest.raises(ValueError, match="negative_clicks=False.*labels=None"):
            paper(volume, points, ones)  # a paper model takes no labels, all-positive neither
        neg = ones.clone()
        neg[:, 1] = 0
        changed = ext(volume, points, neg)
        emb = ext.encode(volume)
        assert torch.equal(ext.decode(emb, points, neg), changed)
    assert (changed - want).abs().max() > 1e-4  # a negative click is not a positive one


def test_extension_checkpoint_round_trip(tmp_path, paper_and_extension, tiny_inputs) -> None:
    _, ext = paper_and_extension
    with torch.no_grad():
        ext.prompt_encoders["4"].label_embed.weight.add_(0.5)  # as after training
    path = tmp_path / "ext.pt"
    save_checkpoint(ext, path)
    back = load_checkpoint(path, variant="tiny_interactive").eval()
    volume, points = tiny_inputs
    labels = torch.tensor([[1, 0, 1], [1, 1, 0]])
    with torch.no_grad():
        assert torch.equal(back(volume, points, labels), ext(volume, points, labels))


@pytest.mark.parametrize("labels, message", [
    (torch.ones(2, 2, dtype=torch.long), "labels must be B×N"),
    (torch.ones(2, 3), "integers 0 .negative. or 1"),
])
def test_bad_labels_are_refused(paper_and_extension, tiny_inputs, labels, message) -> None:
    _, ext = paper_and_extension
    volume, points = tiny_inputs
    with torch.no_grad(), pytest.raises(ValueError, match=message):
        ext(volume, points, labels)
    # their values (0/1, a positive click in each row) are the boundary's check:
    # tests/data/test_clicks.py::test_label_rows_are_checked, the predictor's tests


def test_a_negative_click_needs_the_extension(paper_and_extension, tiny_inputs) -> None:
    paper, _ = paper_and_extension
    volume, points = tiny_inputs
    with torch.no_grad(), pytest.raises(ValueError, match="negative_clicks=False"):
        paper(volume, points, torch.tensor([[1, 0, 1], [1, 1, 1]]))
