"""Chapter 7, Table 3: at which feature level(s) the prompt enters the encoder.

The paper's model puts its prompt encoder on level 4 (after the last encoder block); Table 3
compares it with prompt encoders on levels {3, 4}, {2, 4}, {1, 4} and {1, 2, 3, 4}, on KiTS21
with one click. Each setting is a named configuration (:mod:`sam3d.config`): ``vit_b`` /
``vit_b_levels_<digits>`` at the paper's size, ``tiny`` / ``tiny_levels_<digits>`` for smoke runs.

* :func:`count_rows` — tuned parameters per setting (meta device: no memory, no init);
* :func:`run_levels` — each setting trained once (content-keyed cache) and evaluated with the
  paper's protocol (``k`` clicks, one ROI) on the held-out split;
* :func:`paper_table3` — the paper's kidney numbers, keyed like the run's rows.

Smoke mode trains the tiny settings for a few steps each on the book's phantoms, all with the
same short recipe (so level {4} is trained like the others, not taken from the longer shared
smoke model): the numbers show the settings train and segment, nothing about the paper's claim.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import get_config
from ..reference import paper_rows
from ..rehearsal import full_variant  # the variant a rehearsal trains instead
from .peft import RUNS, evaluate_variant, variant_checkpoint
from .report import check_mode

#: the settings of Table 3 as the paper writes them, in the paper's order (level 4 last)
SETTINGS: tuple[str, ...] = ("1+2+3+4", "1+4", "2+4", "3+4", "4")
#: Table 3 is reported on KiTS21 only
PAPER_DATASET = "kits"


def check_settings(settings: Sequence[str] | None) -> tuple[str, ...]:
    """Setting names such as ``"2+4"`` (default: all five, in the paper's order)."""
    if settings is None:
        return SETTINGS
    out = tuple(settings)
    unknown = [s for s in out if s not in SETTINGS]
    if not out or unknown or len(set(out)) != len(out):
        raise ValueError(f"settings must be distinct names among {list(SETTINGS)}, "
                         f"got {settings!r}")
    return out


def levels_of(setting: str) -> tuple[int, ...]:
    """``"2+4"`` → ``(2, 4)``."""
    check_settings([setting])
    return tuple(int(v) for v in setting.split("+"))


def variant_of(setting: str, mode: str = "full") -> str:
    """The configuration of a setting: ``vit_b`` / ``tiny`` for level 4, else
    ``<base>_levels_<digits>``; checked against the registry's ``prompt_levels``."""
    base = "tiny" if check_mode(mode) == "smoke" else "vit_b"
    levels = levels_of(setting)
    name = base if levels == (4,) else f"{base}_levels_{''.join(map(str, levels))}"
    cfg = get_config(name)
    if tuple(sorted(cfg.prompt_levels)) != levels:
        raise RuntimeError(f"configuration {name} has prompt levels {cfg.prompt_levels}, "
                           f"expected {levels}")
    return name


def count_rows(mode: str = "full", settings: Sequence[str] | None = None) -> list[dict]:
    """Parameters per setting (:func:`sam3d.info.variant_report`): ``levels``, ``config``,
    ``prompt_encoders``, ``prompt_encoder`` (each), ``encoder_tuned``, ``decoder``, ``tuned``
    (everything optimised) and ``extra`` (tuned minus level 4's)."""
    from ..info import variant_report

    settings = check_settings(settings)
    base = variant_report(variant_of("4", mode))["tuned"]
    rows = []
    for setting in settings:
        rep = variant_report(variant_of(setting, mode))
        rows.append({"levels": setting, "config": rep["variant"],
                     "prompt_encoders": rep["prompt_encoders"],
                     "prompt_encoder": rep["prompt_encoder"],
                     "encoder_tuned": rep["encoder_tuned"], "decoder": rep["decoder"],
                     "tuned": rep["tuned"], "extra": rep["tuned"] - base})
    return rows


def run_levels(mode: str = "smoke", settings: Sequence[str] | None = None, *, k: int = 1,
               seed: int = 0, device: str = "cpu", dataset: str = PAPER_DATASET,
               data_dir=None, sam_checkpoint=None, root: str | Path = RUNS,
               checkpoints: dict | None = None,
               overrides: Mapping[str, Any] | None = None) -> list[dict]:
    """Train (or reuse) and evaluate every setting with ``k`` click(s) (the paper's ROI
    protocol) on the held-out split; one row per setting.

    Rows: ``levels``, ``config``, ``dice``, ``nsd`` (percent), their standard deviations,
    ``cases``, ``trained_now``, ``train_seconds``, ``eval_seconds``, ``eval_cached`` (scores
    of an identical earlier evaluation, :func:`evaluate_variant`), ``checkpoint``.
    Smoke runs keep the book smoke recipe's ``tuning: full`` (the tiny model has no pretrained
    weights to freeze). ``checkpoints`` maps a setting to an existing checkpoint to evaluate.
    """
    settings = check_settings(settings)
    check_mode(mode)
    rows = []
    for setting in settings:
        variant = variant_of(setting, mode)
        ckpt, run_dir, trained_now, seconds = variant_checkpoint(
            variant, mode, (checkpoints or {}).get(setting), dataset=dataset,
            data_dir=data_dir, sam_checkpoint=sam_checkpoint, root=root,
            tuning="full" if mode == "smoke" else None, overrides=overrides)
        scores = evaluate_variant(ckpt, Path(run_dir) / f"eval-roi-k{k}-seed{seed}",
                                  modes=("roi",), k=k, seed=seed, device=device,
                                  sam_checkpoint=sam_checkpoint)
        rows.append({"levels": setting, "config": full_variant(variant), **scores,
                     "trained_now": trained_now, "train_seconds": round(seconds, 1),
                     "checkpoint": str(ckpt)})
    return rows


def paper_table3() -> list[dict]:
    """The paper's Table 3 (KiTS21, one click): ``levels``, ``dice``, ``nsd`` (percent)."""
    rows = []
    for r in paper_rows("table3"):
        levels = r["levels_with_prompt"]
        if isinstance(levels, float):  # "4" reads as a number
            levels = str(int(levels))
        rows.append({"levels": levels, "dice": r["kidney_dice"], "nsd": r["kidney_nsd"]})
    check_settings([r["levels"] for r in rows])
    return rows
