"""Checkpoints: the authors' released format, and sam3d's own format.

Official (``train.py`` of med-air/3DSAM-adapter): one pickled dict with ``encoder_dict``,
``feature_dict`` (a list of four prompt-encoder state dicts; level ``i+1`` is entry ``i``, and
the paper's model uses only the fourth) and ``decoder_dict``.

sam3d: ``{"format": "sam3d/1", "variant", "config", "sam_checkpoint_sha256", "state"}`` where
``state`` holds only the tuned tensors when the model sits on a SAM checkpoint (whose SHA-256
is recorded; the frozen tensors come from it), else the whole state dict. Written atomically
(temporary file, then rename).

Supervised baselines (:mod:`sam3d.baselines.networks`, prompt-free MONAI networks trained by
``sam3d train --set model=<name>``): ``{"format": "sam3d-baseline/1", "variant": <baseline
name>, "size": [D, H, W], "state": <whole state dict>, "extra"}``, written and read by
:mod:`sam3d.baselines.checkpoints`.

One registry of formats (:class:`CheckpointFormat`, :func:`register_format`): a model names
its format (``model.checkpoint_format``, :mod:`sam3d.modeling.kind`), :func:`save_checkpoint`
writes it in that format and :func:`load_checkpoint` rebuilds whatever format a file records,
so ``sam3d evaluate --mode auto`` and :func:`sam3d.inference.predict.load_for_inference` load
either; everything is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .build import build_sam3d
from .config import Sam3DConfig
from .data.splits import SplitRef
from .modeling import Sam3D
from .modeling.attention import shifted_window_mask
from .modeling.kind import SegmentationModel
from .modeling.sam3d import FORMAT  # re-exported: sam3d.checkpoint.FORMAT
from .utils.files import atomic_write

#: formats read and written by a module that imports this one, so it is imported (and
#: registers its format) when a file in that format is first read or written
_FORMAT_HOMES = {"sam3d-baseline/1": "sam3d.baselines.checkpoints"}
#: the entries of the authors' checkpoints (``train.py``'s ``save_checkpoint``)
OFFICIAL_KEYS = ("encoder_dict", "feature_dict", "decoder_dict")
#: parameters of the extensions (negative clicks, click maps, click refiner), which neither a
#: paper-variant checkpoint nor the authors' format holds: they keep their start (zero where
#: it matters, so the paper's logits) when such a file is loaded into an extension variant
EXTENSION_KEYS = re.compile(r"(^|\.)(label_embed|click_conv)\.weight$|(^|\.)click_refiner\.")

_UNUSED_PROMPT_KEYS = re.compile(
    r"positional_encoding_gaussian_matrix|.*cross_attn_token_to_image\.")


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint (unreadable, truncated, wrong variant …)."""


def read_checkpoint_file(path: str | Path) -> Any:
    """``torch.load(weights_only=True)`` with clear errors for missing or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # torch's own text suggests weights_only=False, which is unsafe for an untrusted file:
        # keep only its first line
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (corrupt, truncated, not a checkpoint "
            f"at all, or holding objects that are unsafe to load): {type(exc).__name__}: {first}"
        ) from exc


@dataclass(frozen=True)
class CheckpointFile:
    """A checkpoint file read once: its ``path`` (named in messages) and ``contents`` (as
    :func:`read_checkpoint_file` returns them). :func:`load_checkpoint` and
    :func:`sam3d.inference.predict.load_for_inference` take one in place of a path, so a caller
    that also needs the recorded split or training configuration reads the file only once."""

    path: Path
    contents: Any

    @classmethod
    def read(cls, path: str | Path) -> CheckpointFile:
        """The file at ``path`` (the errors of :func:`read_checkpoint_file`)."""
        return cls(Path(path), read_checkpoint_file(path))

    @classmethod
    def of(cls, source: str | Path | CheckpointFile) -> CheckpointFile:
        """``source`` itself, or the file at that path, read."""
        return source if isinstance(source, CheckpointFile) else cls.read(source)


def recorded_training_config(ckpt: object) -> dict:
    """The training configuration a training checkpoint (as read by
    :func:`read_checkpoint_file`) recorded under ``extra.train.config``; ``{}`` when none."""
    extra = (ckpt.get("extra") or {}) if isinstance(ckpt, dict) else {}
    config = (extra.get("train") or {}).get("config") if isinstance(extra, dict) else None
    return config if isinstance(config, dict) else {}


def split_reference(ckpt: object) -> SplitRef:
    """The split the training run of ``ckpt`` (as read by :func:`read_checkpoint_file`) used:
    its recorded split file, fold and seed; the defaults (official fold 0, seed 0) for a
    checkpoint that recorded no training run (an official one, a hand-saved model)."""
    return SplitRef.of(recorded_training_config(ckpt))


def load_state_strict(module: torch.nn.Module, state: object, what: str) -> None:
    """Load ``state`` into ``module`` requiring exactly its keys and shapes.

    ``what`` names the state in the message (``"encoder_dict"``, ``"checkpoint <path>"``).
    Raises :class:`CheckpointError` for a ``state`` that is not a ``str → tensor`` dict, or
    listing (up to 8 each) the missing keys, the unexpected keys and the shape mismatches, and
    their counts. The one strict loader of the package (official, sam3d, baseline and SAM
    checkpoints all load through it).
    """
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{what} is not a plain state dict (str → tensor); got "
                              f"{type(state).__name__}")
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
             for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        def listed(items: list[str]) -> str:
            return f"{len(items)} {items[:8]}{' …' if len(items) > 8 else ''}"
        raise CheckpointError(
            f"{what} does not match the model ({type(module).__name__}): missing "
            f"{listed(missing)}; unexpected {listed(unexpected)}; shape mismatches "
            f"{listed(wrong)}")
    module.load_state_dict(state, strict=True)


def official_to_sam3d(ckpt: dict, model: Sam3D) -> None:
    """Load an official checkpoint dict into ``model`` (in place), checking every key."""
    for key in ("encoder_dict", "feature_dict", "decoder_dict"):
        if key not in ckpt:
            raise CheckpointError(f"not an official 3DSAM-adapter checkpoint: no {key!r} entry")
    for key in ("encoder_dict", "decoder_dict"):
        if not isinstance(ckpt[key], dict):
            raise CheckpointError(f"{key} must be a state dict, got {type(ckpt[key]).__name__}")
    enc = {}
    encoder = model.image_encoder
    for key, value in ckpt["encoder_dict"].items():
        if key.endswith(".attn_mask"):  # a constant of the official constructor: verify, drop
            index = key.split(".")[1]
            if not index.isdigit() or int(index) >= len(encoder.blocks):
                raise CheckpointError(
                    f"{key}: this model has {len(encoder.blocks)} blocks (wrong variant?)"
                )
            block = encoder.blocks[int(index)]
            if not block.shift:
                raise CheckpointError(f"{key}: block {index} of this model is not shifted")
            want = shifted_window_mask(encoder.grid, block.window, block.shift).squeeze(1)
            if value.shape != want.shape or not torch.equal(value, want):
                raise CheckpointError(f"{key} is not the shifted-window mask this model uses")
            continue
        enc["patch_embed." + key if key.startswith("slice_embed.") else key] = value
    load_state_strict(model.image_encoder, enc, "encoder_dict")
    features = ckpt["feature_dict"]
    if not isinstance(features, (list, tuple)):
        raise CheckpointError("feature_dict must be a list of prompt-encoder state dicts")
    for level_key, prompt_encoder in model.prompt_encoders.items():
        level = int(level_key)
        if level > len(features) or not isinstance(features[level - 1], dict):
            raise CheckpointError(f"feature_dict has no state dict for prompt level {level}")
        state = {
            k.removeprefix("transformer."): v
            for k, v in features[level - 1].items() if not _UNUSED_PROMPT_KEYS.match(k)
        }
        # the negative-click extension is not in the authors' format: it keeps its own
        # initialisation, whose positive row is zero (the paper's logits on positive clicks)
        load_state_strict(prompt_encoder, {**_extension_start(prompt_encoder), **state},
                          f"feature_dict[{level - 1}]")
    decoder = ckpt["decoder_dict"]
    if isinstance(decoder, dict):  # the click maps and refiner: their zero start, likewise
        decoder = {**_extension_start(model.mask_decoder), **decoder}
    load_state_strict(model.mask_decoder, decoder, "decoder_dict")


def _extension_start(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s extension parameters (:data:`EXTENSION_KEYS`) as they are now."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()
            if EXTENSION_KEYS.search(k)}


def is_official_checkpoint(ckpt: object) -> bool:
    """True for a loaded file in the authors' format (any of :data:`OFFICIAL_KEYS`, no sam3d
    ``format``); :func:`load_official_checkpoint` then names whatever entry is missing."""
    return isinstance(ckpt, dict) and "format" not in ckpt and any(k in ckpt for k in OFFICIAL_KEYS)


def load_official_checkpoint(
    source: str | Path | dict, variant: str | Sam3DConfig = "vit_b", **overrides
) -> Sam3D:
    """Build ``variant`` and load the authors' checkpoint (a path or an already-loaded dict)."""
    ckpt = source if isinstance(source, dict) else read_checkpoint_file(source)
    if not isinstance(ckpt, dict):
        raise CheckpointError("an official checkpoint is a dict with encoder/feature/decoder dicts")
    model = build_sam3d(variant, **overrides)
    official_to_sam3d(ckpt, model)
    return model


@dataclass(frozen=True)
class CheckpointFormat:
    """One checkpoint format: ``state(model)`` the tensors it stores; ``fields(model)`` its
    entries besides ``format``, ``state`` and ``extra``; ``load(ckpt, path, sam_checkpoint,
    variant)`` the model rebuilt from a read file (``variant``: None, or the name it must
    hold), raising :class:`CheckpointError` for a file it cannot use."""

    name: str
    state: Callable[[Any], dict[str, torch.Tensor]]
    fields: Callable[[Any], dict]
    load: Callable[[dict, Path, Any, Any], torch.nn.Module]


_FORMATS: dict[str, CheckpointFormat] = {}


def register_format(fmt: CheckpointFormat) -> None:
    """Add ``fmt`` to the registry (once per name)."""
    if not isinstance(fmt, CheckpointFormat):
        raise TypeError(f"expected a CheckpointFormat, got {type(fmt).__name__}")
    if fmt.name in _FORMATS:
        raise ValueError(f"checkpoint format {fmt.name!r} is already registered")
    _FORMATS[fmt.name] = fmt


def get_format(name: object) -> CheckpointFormat | None:
    """The registered format called ``name`` (importing its home module on first use); None
    for a name no format has."""
    if not isinstance(name, str):
        return None
    if name not in _FORMATS and name in _FORMAT_HOMES:
        importlib.import_module(_FORMAT_HOMES[name])
    return _FORMATS.get(name)


def known_formats() -> list[str]:
    """Every format name :func:`load_checkpoint` reads."""
    return sorted({*_FORMATS, *_FORMAT_HOMES})


def _format_of(model: SegmentationModel) -> CheckpointFormat:
    fmt = get_format(model.checkpoint_format)
    if fmt is None:
        raise ValueError(f"{model.name}: no checkpoint format {model.checkpoint_format!r}")
    return fmt


def stored_state(model: SegmentationModel) -> dict[str, torch.Tensor]:
    """The tensors ``model``'s checkpoint format stores: detached views of the model's own
    tensors, not copies (a caller that keeps them past an update reads the new values)."""
    return _format_of(model).state(model)


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically (:func:`sam3d.utils.files.atomic_write`)."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_checkpoint(model: SegmentationModel, path: str | Path,
                    extra: dict | None = None) -> None:
    """Write ``model`` in its checkpoint format, with ``extra`` (the training state …)."""
    fmt = _format_of(model)
    atomic_save({"format": fmt.name, **fmt.fields(model), "state": fmt.state(model),
                 "extra": extra or {}}, path)


def _sam3d_state(model: Sam3D) -> dict[str, torch.Tensor]:
    """On a SAM checkpoint: every tuned parameter (the frozen ones are SAM's). Without one (the
    ``tiny`` model, or a random-init experiment) nothing can restore the frozen weights, so
    the whole state dict is stored."""
    if model.sam_checkpoint_sha256:
        return {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach() for k, v in model.state_dict().items()}


def _sam3d_fields(model: Sam3D) -> dict:
    return {"variant": model.config.name, "config": dataclasses.asdict(model.config),
            "sam_checkpoint_sha256": model.sam_checkpoint_sha256}


def load_checkpoint(
    source: str | Path | CheckpointFile, sam_checkpoint: str | Path | None = None,
    variant: str | None = None,
) -> Any:
    """Rebuild a model (a :class:`~sam3d.modeling.kind.SegmentationModel`: a Sam3D, or a
    supervised baseline) from a checkpoint in a registered format (a path, or a
    :class:`CheckpointFile` already read).

    ``sam_checkpoint``: the SAM file the weights sit on (its SHA-256 must match the recorded
    one). ``variant``: if given, the checkpoint must be of that variant (or baseline).
    """
    read = CheckpointFile.of(source)
    path, ckpt = read.path, read.contents
    fmt = get_format(ckpt.get("format")) if isinstance(ckpt, dict) else None
    if fmt is None:
        names = " or ".join(repr(n) for n in known_formats())
        raise CheckpointError(f"{path} is not a sam3d checkpoint (expected format {names}, "
                              f"or the authors' {'/'.join(OFFICIAL_KEYS)} dicts)")
    return fmt.load(ckpt, path, sam_checkpoint, variant)


def _load_sam3d(ckpt: dict, path: Path, sam_checkpoint: str | Path | None,
                variant: str | None) -> Sam3D:
    """Rebuild a Sam3D from a ``sam3d/1`` checkpoint."""
    for key, kind in (("variant", str), ("config", dict), ("state", dict)):
        if not isinstance(ckpt.get(key), kind):
            raise CheckpointError(f"{path} is an incomplete sam3d checkpoint: {key!r} missing")
    if variant is not None and ckpt["variant"] != variant:
        raise CheckpointError(
            f"{path} holds variant {ckpt['variant']!r}, but {variant!r} was requested"
        )
    fields = {f.name for f in dataclasses.fields(Sam3DConfig)}
    raw = {k: tuple(v) if isinstance(v, list) else v
           for k, v in ckpt["config"].items() if k in fields}
    try:
        cfg = Sam3DConfig(**raw)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid model configuration: {exc}") from exc
    recorded = ckpt.get("sam_checkpoint_sha256")
    if not recorded and sam_checkpoint is not None:
        raise CheckpointError(
            f"{path} stores the whole model (it was not trained on a SAM checkpoint); load it "
            f"without sam_checkpoint"
        )
    if recorded and sam_checkpoint is None:
        raise CheckpointError(
            f"{path} was trained on a SAM checkpoint (sha256 {recorded[:12]}…); pass it as "
            f"sam_checkpoint so the frozen weights can be restored"
        )
    model = build_sam3d(cfg, sam_checkpoint=sam_checkpoint)
    if recorded and model.sam_checkpoint_sha256 != recorded:
        raise CheckpointError(
            f"SAM checkpoint hash {model.sam_checkpoint_sha256[:12]}… differs from the "
            f"{recorded[:12]}… these weights were trained on"
        )
    want = _sam3d_state(model)
    state = ckpt["state"]
    bad = sorted(set(want) ^ set(state)) + [
        k for k in want if k in state and state[k].shape != want[k].shape
    ]
    if bad:
        raise CheckpointError(f"{path}: tuned tensors do not match variant {cfg.name!r}: {bad[:5]}")
    model.load_state_dict(state, strict=False)
    return model


register_format(CheckpointFormat(FORMAT, _sam3d_state, _sam3d_fields, _load_sam3d))
