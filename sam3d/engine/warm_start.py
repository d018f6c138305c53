"""Warm start: a run that begins from trained weights instead of its variant's initialisation.

``TrainConfig.init_from`` names either a shipped training configuration (its cached run,
trained on first use beside the new run's folder by :func:`~sam3d.engine.cached.
trained_checkpoint`) or a checkpoint file (a sam3d training checkpoint, or the authors'
released dict). The extensions were made for this: their new parameters (the label embedding's
positive row, the click-map convolution) start at zero, so a paper model loaded into an
extension variant gives the paper's logits on positive clicks, and training the extension from
it starts where the paper model stands (issue 13: ``book_interactive`` starts from
``book_smoke``). Every parameter of the file must fit the model (a strict load); only the
extension's own parameters may be absent from it, and keep their start.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..checkpoint import (
    EXTENSION_KEYS,
    CheckpointError,
    CheckpointFile,
    is_official_checkpoint,
    load_checkpoint,
    load_state_strict,
    official_to_sam3d,
)
from ..hashing import sha256_file
from ..modeling import Sam3D

if TYPE_CHECKING:
    from .config import TrainConfig


def init_chain(cfg: TrainConfig) -> list[TrainConfig]:
    """The configurations ``cfg.init_from`` names, transitively (``[]`` for a file or none).

    Raises :class:`~sam3d.engine.config.ConfigError` for a cycle (``a → b → a``)."""
    from .config import ConfigError, load_config, shipped_configs

    chain: list[TrainConfig] = []
    names = [cfg.name]
    current = cfg
    while current.init_from and current.init_from in shipped_configs():
        if current.init_from in names:
            raise ConfigError("init_from cycle: " + " → ".join([*names, current.init_from]))
        names.append(current.init_from)
        current = load_config(current.init_from)
        chain.append(current)
    return chain


def init_identity(cfg: TrainConfig, key) -> dict | None:
    """What the starting weights of ``cfg`` are, for its cache key: ``{"config": key}`` of
    the configuration it names (``key``: :func:`~sam3d.engine.cached.config_key`), or the
    SHA-256 of the file it names; None without ``init_from``."""
    if not cfg.init_from:
        return None
    chain = init_chain(cfg)
    if chain:
        return {"config": key(chain[0])}
    return {"sha256": sha256_file(init_file(cfg.init_from))}


def init_file(init_from: str) -> Path:
    """``init_from`` as a checkpoint file (for a value that names no shipped configuration).

    Raises :class:`~sam3d.engine.config.ConfigError` when no such file exists."""
    from .config import ConfigError

    path = Path(init_from)
    if not path.is_file():
        raise ConfigError(f"init_from {init_from!r} is neither a shipped training "
                          "configuration nor a checkpoint file")
    return path


def warm_start(model: Sam3D, source: str | Path,
               sam_checkpoint: str | Path | None = None) -> list[str]:
    """Load the trained weights of ``source`` (a checkpoint path) into ``model`` in place.

    A sam3d checkpoint of this variant, or of the paper variant the extension variant extends
    (the same parameters, less the extension's), or the authors' dict. ``sam_checkpoint``:
    the SAM file a SAM-based checkpoint sits on. Returns the model's parameters the file did
    not hold (the extension's, which keep their start). Raises
    :class:`~sam3d.checkpoint.CheckpointError` for any other mismatch.
    """
    if not isinstance(model, Sam3D):
        raise CheckpointError(f"init_from starts a sam3d model, not {type(model).__name__}")
    read = CheckpointFile.of(source)
    own = model.state_dict()
    if is_official_checkpoint(read.contents):
        official_to_sam3d(read.contents, model)  # keeps the extension's start itself
        return [k for k in own if EXTENSION_KEYS.search(k)]  # not in the authors' format
    trained = load_checkpoint(read, sam_checkpoint=sam_checkpoint)
    if not isinstance(trained, Sam3D):
        raise CheckpointError(f"{read.path} holds a {type(trained).__name__}, not a sam3d model")
    state = {k: v.detach() for k, v in trained.state_dict().items()}
    kept = [k for k in own if k not in state and EXTENSION_KEYS.search(k)]
    state.update({k: own[k] for k in kept})
    load_state_strict(model, state, f"init_from {read.path}")
    return kept


