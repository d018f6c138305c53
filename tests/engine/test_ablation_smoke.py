"""Every tiny named ablation / PEFT configuration trains one real smoke epoch.

The list comes from the model registry (every ``tiny_*`` variant but ``tiny`` itself: the
Table 2 ``tiny_auto_*`` PEFT variants and the Table 3 ``tiny_levels_*`` variants), each trained
with its *own* tuning policy (``tuning=None``, not the smoke recipes' ``full``) for one epoch of
two iterations on three small phantoms. Checked: finite losses, a checkpoint that loads as that
variant, the tuned-parameter count of the registry, and that the steps changed exactly the
tuned parameters (but the few that get no gradient by construction, listed) while every frozen
one kept its initial value.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import torch

from sam3d.checkpoint import load_checkpoint
from sam3d.config import CONFIGS
from sam3d.engine.config import TrainConfig
from sam3d.engine.loop import Trainer
from sam3d.info import variant_report

ABLATIONS = sorted(name for name in CONFIGS if name.startswith("tiny_"))
#: tuned parameters that get no gradient by construction, so no step can change them
NO_GRADIENT = {
    # Med-Tuning's inter-stage link of the first stage multiplies the all-zero initial state
    "tiny_auto_medtuning": {"image_encoder.peft.0.link.weight"},
    # the click maps carry only corrective clicks (Sam3D.decode's first_prompt); this epoch has
    # no interaction rounds, so its maps are empty and their convolution gets no gradient
    "tiny_interactive_maps": {"mask_decoder.click_conv.weight"},
    # the same, and the click refiner works only around corrective clicks
    "tiny_interactive_refine": {"mask_decoder.click_conv.weight"} | {
        f"mask_decoder.click_refiner.net.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")},
    # the refiner alone sees corrective clicks, and is fitted after the epochs (refiner_fit)
    "tiny_interactive_local": {
        f"mask_decoder.click_refiner.net.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")},
}


class RecordingTrainer(Trainer):
    """A Trainer that keeps the model it builds and a copy of its initial parameters."""

    def _model(self):
        self.model = super()._model()
        self.initial = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        return self.model


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """One folder for the phantoms and the statistics cache of every configuration."""
    return tmp_path_factory.mktemp("ablation_smoke")


def test_the_registry_holds_both_ablation_families() -> None:
    auto = [n for n in ABLATIONS if n.startswith("tiny_auto_")]
    levels = [n for n in ABLATIONS if n.startswith("tiny_levels_")]
    assert len(auto) == 6 and len(levels) == 4 and len(ABLATIONS) == 15, ABLATIONS
    # and the negative-click extension, with and without click maps and click refiner (or the
    # refiner alone), and
    # every click as a map (the book's real-CT model): not ablations of the paper, but
    # variants to train
    assert set(ABLATIONS) - set(auto) - set(levels) == {
        "tiny_interactive", "tiny_interactive_maps", "tiny_interactive_refine",
        "tiny_interactive_local", "tiny_maps"}
    assert {CONFIGS[n].tuning for n in auto} == {"paper", "full", "peft"}
    assert all(CONFIGS[n].prompt_levels == () for n in auto)
    assert all(len(CONFIGS[n].prompt_levels) > 1 for n in levels)


@pytest.mark.slow  # ten real epochs: ≈ 10–20 s each on a 2-core CPU
@pytest.mark.parametrize("name", ABLATIONS)
def test_one_smoke_epoch(name: str, shared: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(
        name=name, dataset="phantoms", data_dir=str(shared / "phantoms"), phantoms=3,
        phantom_difficulty=0.0, phantom_shape=(48, 48, 40), cache_dir=str(shared / "cache"),
        variant=name, tuning=None, epochs=1, iterations_per_epoch=2, lr=1e-3, seed=0,
        device="cpu", out_dir=str(tmp_path / "run"), progress=False, tensorboard=False,
    )
    trainer = RecordingTrainer(cfg)
    start = time.perf_counter()
    history = trainer.run()
    seconds = time.perf_counter() - start

    assert len(history) == 1
    row = history[0]
    assert math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])
    assert 0.0 <= row["val_dice"] <= 1.0

    # the checkpoint is written and loads as this variant, with its own tuning policy
    out = Path(cfg.out_dir)
    assert (out / "last.pt").is_file() and (out / "metrics.csv").is_file()
    loaded = load_checkpoint(out / "last.pt", variant=name)
    assert loaded.config == CONFIGS[name]

    # the tuned count is the registry's, and the policy is the variant's (not "full")
    tuned = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    count = sum(p.numel() for n, p in trainer.model.named_parameters() if n in tuned)
    report = variant_report(name)
    assert count == report["tuned"]
    if CONFIGS[name].tuning != "full":
        assert report["encoder_tuned"] < report["encoder_total"]
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == tuned

    # one epoch moved exactly the tuned parameters; every frozen one is as initialised
    final = dict(loaded.named_parameters())
    changed = {n for n, p in trainer.initial.items() if not torch.equal(p, final[n].detach())}
    frozen_changed = sorted(changed - tuned)
    assert frozen_changed == [], frozen_changed[:5]
    assert tuned - changed == NO_GRADIENT.get(name, set()), sorted(tuned - changed)[:5]
    print(f"\n{name}: one epoch (2 iterations + validation) {seconds:.1f} s, tuned {count:,} "
          f"(encoder {report['encoder_tuned']:,}), train loss {row['train_loss']:.4f}")

