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
name>, "size": [D, H, W], "state": <whole state dict>, "extra"}``. :func:`save_checkpoint`
and :func:`load_checkpoint` handle both formats, so ``sam3d evaluate --mode auto`` and
:func:`sam3d.inference.predict.load_for_inference` load either; everything is read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .build import build_sam3d
from .config import Sam3DConfig
from .data.splits import SplitRef
from .modeling import Sam3D
from .modeling.attention import shifted_window_mask
from .utils.files import atomic_write

FORMAT = "sam3d/1"
BASELINE_FORMAT = "sam3d-baseline/1"
#: the entries of the authors' checkpoints (``train.py``'s ``save_checkpoint``)
OFFICIAL_KEYS = ("encoder_dict", "feature_dict", "decoder_dict")
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
        if prompt_encoder.label_embed is not None and "label_embed.weight" not in state:
            # the negative-click extension is not in the authors' format: it keeps its own
            # initialisation, whose positive row is zero (the paper's logits on positive clicks)
            state["label_embed.weight"] = prompt_encoder.label_embed.weight.detach().clone()
        load_state_strict(prompt_encoder, state, f"feature_dict[{level - 1}]")
    load_state_strict(model.mask_decoder, ckpt["decoder_dict"], "decoder_dict")


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


def stored_state(model: Sam3D) -> dict[str, torch.Tensor]:
    """The tensors a sam3d checkpoint stores.

    On a SAM checkpoint: every tuned parameter (the frozen ones are SAM's). Without one (the
    ``tiny`` model, or a random-init experiment) nothing can restore the frozen weights, so
    the whole state dict is stored.
    """
    if getattr(model, "sam_checkpoint_sha256", None):
        return {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _baseline_class():
    from .baselines.networks import PromptFree

    return PromptFree


def model_name(model: torch.nn.Module) -> str:
    """The registered name a checkpoint records: the variant, or the baseline's name."""
    if isinstance(model, _baseline_class()):
        return model.name
    return model.config.name


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically (:func:`sam3d.utils.files.atomic_write`)."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_checkpoint(model: Sam3D, path: str | Path, extra: dict | None = None) -> None:
    """Write the tuned weights with the variant, config and SAM checkpoint hash (a
    :class:`~sam3d.baselines.networks.PromptFree` baseline: its name, size and weights)."""
    if isinstance(model, _baseline_class()):
        atomic_save({"format": BASELINE_FORMAT, "variant": model.name,
                     "size": list(model.size), "state": stored_state(model),
                     "extra": extra or {}}, path)
        return
    cfg = model.config
    atomic_save(
        {
            "format": FORMAT,
            "variant": cfg.name,
            "config": dataclasses.asdict(cfg),
            "sam_checkpoint_sha256": model.sam_checkpoint_sha256,
            "state": stored_state(model),
            "extra": extra or {},
        },
        path,
    )


def load_checkpoint(
    source: str | Path | CheckpointFile, sam_checkpoint: str | Path | None = None,
    variant: str | None = None,
) -> Sam3D:
    """Rebuild a model from a sam3d checkpoint (a path, or a :class:`CheckpointFile` already
    read).

    ``sam_checkpoint``: the SAM file the weights sit on (its SHA-256 must match the recorded
    one). ``variant``: if given, the checkpoint must be of that variant.
    """
    read = CheckpointFile.of(source)
    path, ckpt = read.path, read.contents
    if isinstance(ckpt, dict) and ckpt.get("format") == BASELINE_FORMAT:
        return _load_baseline(ckpt, path, sam_checkpoint, variant)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a sam3d checkpoint (expected format {FORMAT!r} "
                              f"or {BASELINE_FORMAT!r}, or the authors' "
                              f"{'/'.join(OFFICIAL_KEYS)} dicts)")
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
    want = stored_state(model)
    state = ckpt["state"]
    bad = sorted(set(want) ^ set(state)) + [
        k for k in want if k in state and state[k].shape != want[k].shape
    ]
    if bad:
        raise CheckpointError(f"{path}: tuned tensors do not match variant {cfg.name!r}: {bad[:5]}")
    model.load_state_dict(state, strict=False)
    return model


def _load_baseline(ckpt: dict, path, sam_checkpoint, variant) -> torch.nn.Module:
    """Rebuild a supervised baseline (``sam3d-baseline/1``) and load its whole state strictly."""
    from .baselines.networks import BASELINES

    name, size, state = ckpt.get("variant"), ckpt.get("size"), ckpt.get("state")
    if name not in BASELINES:
        raise CheckpointError(f"{path}: unknown baseline {name!r}; known: {sorted(BASELINES)}")
    if not (isinstance(size, (list, tuple)) and len(size) == 3) or not isinstance(state, dict):
        raise CheckpointError(f"{path} is an incomplete baseline checkpoint (size or state)")
    if variant is not None and name != variant:
        raise CheckpointError(f"{path} holds baseline {name!r}, but {variant!r} was requested")
    if sam_checkpoint is not None:
        raise CheckpointError(f"{path} is a supervised baseline ({name}) without SAM weights; "
                              "load it without sam_checkpoint")
    baseline = BASELINES[name]
    try:
        cube = len(set(size)) == 1
        model = baseline.engine_model(int(size[0])) if cube else baseline.model(size)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    load_state_strict(model, state, f"{path} ({name})")
    return model
