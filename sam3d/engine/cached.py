"""Train once, reuse everywhere: the checkpoint of a configuration, trained on first request.

The book's chapters (training, Table 1, the ablations, the clicks chapter) all need a trained
model. :func:`trained_checkpoint` derives a folder from the *content* of the configuration
(every setting except where it writes and how it reports), trains into it only when it holds
no finished run, resumes an interrupted one, and returns the checkpoint. A changed setting
gives a new folder, so an old result is never mistaken for a new one, nor overwritten.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..utils.files import atomic_write_text
from .config import TrainConfig, load_config
from .warm_start import init_identity

DONE = "done.json"
# settings that do not change what is learned
_PRESENTATION = ("out_dir", "progress", "tensorboard", "name")
# settings added after runs were cached: left out of the key while at their default, so the
# folders of earlier runs keep their keys
_LATER = {"model": "sam3d", "crop": None, "rehearsal": False, "preprocessing": "sam3d",
          "interaction_rounds": 0, "train_target": "crop", "init_from": None,
          "case_weights": None, "refiner_steps": 0, "refiner_lr": 3e-3}


def config_key(cfg: TrainConfig) -> str:
    """A 10-hex-digit key of everything in ``cfg`` that affects the trained weights (with
    ``init_from``: the key of the run it starts from, or the file's SHA-256)."""
    doc = {k: v for k, v in cfg.as_dict().items() if k not in _PRESENTATION
           and not (k in _LATER and v == _LATER[k])}
    if cfg.init_from:  # the starting weights' identity, not their name
        doc["init_from"] = init_identity(cfg, config_key)
    blob = json.dumps(doc, sort_keys=True, default=list).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def run_dir(cfg: TrainConfig, root: str | Path) -> Path:
    """``root/<name>-<key>``: the folder a run of ``cfg`` trains into."""
    return Path(root) / f"{cfg.name}-{config_key(cfg)}"


def trained_checkpoint(config: str | Path | TrainConfig,
                       overrides: Mapping[str, Any] | None = None,
                       root: str | Path = "outputs/runs", until: int | None = None) -> Path:
    """Checkpoint of ``config`` (a shipped name, a YAML file or a :class:`TrainConfig`, with
    ``overrides``: setting → value), trained into :func:`run_dir` if no finished run is there.

    Returns ``best.pt`` (``last.pt`` when validation never improved). The run's ``metrics.csv``
    and ``curves.png`` sit beside it; ``done.json`` records the configuration and the epochs.
    ``until``: train (or go on training) only to that epoch, unfinished; the next call goes on
    from there, exactly as one uninterrupted run (a long recipe trained in parts, e.g. one
    part per test).
    """
    from .loop import Trainer

    if overrides is not None and not isinstance(overrides, Mapping):
        raise TypeError("overrides must be a mapping of setting -> value")
    if isinstance(config, TrainConfig):
        cfg = config.replace(**(overrides or {}))
    else:
        cfg = load_config(config, overrides)
    out = run_dir(cfg, root)
    cfg = cfg.replace(out_dir=str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    # one trainer per folder: a second process asking for the same run waits for the first
    with open(out.parent / f".{out.name}.lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / DONE).is_file():
            history = Trainer(cfg, resume=(out / "last.pt").is_file()).run(until)
            # done: trained to the end, or stopped before ``until`` by its time budget
            if until is None or until >= cfg.epochs or len(history) < until:
                atomic_write_text(out / DONE, json.dumps(
                    {"config": cfg.as_dict(), "epochs": len(history)}, indent=1,
                    default=list) + "\n")
    best = out / "best.pt"
    return best if best.is_file() else out / "last.pt"
