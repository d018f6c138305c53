"""Training configuration: every number of the recipe, read from YAML, overridable by flag.

Shipped configurations live in ``sam3d/configs/train/<name>.yaml`` (one per benchmark dataset
for full mode, plus smoke configurations). A file holds only what differs from
:class:`TrainConfig`'s defaults (the official recipe); ``base: <name>`` first reads another
file (the four benchmarks share ``_paper.yaml``, whose leading underscore keeps it off the list
of runnable configurations). :func:`load_config` takes a shipped name or a path and
``overrides``, a mapping of setting → value (``{"epochs": 3, "bf16": True}``); the
command line's ``key=value`` strings become that mapping through :func:`parse_overrides`, the
only place where strings are parsed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePath
from typing import Any

import yaml

from ..baselines.networks import BASELINES
from ..config import CONFIGS, TUNING_POLICIES
from ..data.official import OFFICIAL
from ..data.specs import SPECS
from ..data.transforms import PREPROCESSING
from .targets import TARGETS

#: what ``TrainConfig.model`` may name: our model, or a supervised baseline
MODELS = ("sam3d", *BASELINES)


class ConfigError(ValueError):
    """A training configuration is malformed."""


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe (defaults: the official one, spec §4.3–4.4).

    Data: ``dataset`` (a registered spec), ``data_dir`` (prepared folder), ``split_file`` /
    ``fold``, ``phantoms`` (> 0: generate that many phantoms into ``data_dir`` first, with
    ``phantom_difficulty`` and ``phantom_shape``), ``cache_dir`` (MONAI PersistentDataset).
    Model: ``model`` ("sam3d", or a supervised baseline of
    :data:`sam3d.baselines.networks.BASELINES`: swin_unetr, unetr, dynunet_smoke — prompt-free,
    trained with the same data pipeline, loss and optimiser, one parameter group; ``variant``,
    ``sam_checkpoint`` and ``tuning`` are then unused), ``crop`` (a baseline's cubic crop edge;
    None: its default ``cube``; must stay None for sam3d, whose variant fixes the crop),
    ``variant``, ``sam_checkpoint``, ``tuning`` (None: the variant's policy), ``init_from``
    (None: the variant's initialisation; a shipped configuration's name: its cached run,
    trained first if need be; a checkpoint file: ours or the authors'. A warm start, not a
    resume: the optimiser and schedule start afresh; :mod:`sam3d.engine.warm_start`).
    Recipe: ``epochs``, ``batch_size``, ``lr`` (every group), ``lr_end_factor`` (linear decay
    over the run, stepped per epoch), ``weight_decay``, ``grad_clip`` (max-norm per group),
    ``lambda_dice``/``lambda_ce``, training clicks ``train_lesion_clicks`` +
    ``train_random_clicks``, ``val_clicks``, ``interaction_rounds`` (simulated interaction,
    not in the paper: up to that many corrective clicks per step from the model's own errors,
    :mod:`sam3d.engine.interaction`; 0 = the paper's recipe), ``train_target`` ("crop": every
    lesion voxel of the crop, the paper; "clicked_lesion": the clicked lesion alone, the
    others background; "clicked_lesion_ignore": the others ignored by the loss;
    "centred_lesion": the crops are cut as the test box around a click on a lesion voxel,
    :mod:`sam3d.data.lesion_crops`, and that lesion alone is the target;
    :mod:`sam3d.engine.targets`), ``iterations_per_epoch``
    (None: one crop per training volume, as the official code), ``case_weights`` (None:
    every training case equally likely; a mapping case id → weight > 0, the cases not named
    weighing 1: each crop's case drawn with those weights, with replacement; needs
    ``iterations_per_epoch`` and one process; e.g. a scarce real case drawn more often than
    many synthetic ones, README), ``val_every``, ``refiner_steps`` (not in the paper: after
    the epochs, fit the click refiner of a ``refiner_only`` variant alone for that many steps
    at ``refiner_lr``, :mod:`sam3d.engine.refiner_fit`; 0 = none; ``epochs`` may then be 0
    with ``init_from``: the start's weights, the refiner fitted on them).
    Runtime: ``seed``, ``workers``, ``device`` ("auto", "cpu", "cuda"), ``bf16``,
    ``grad_checkpointing``, ``out_dir``, ``max_minutes`` (stop after the epoch that passes it),
    ``progress`` (tqdm bars), ``tensorboard``.
    ``preprocessing``: how volumes are read: "sam3d" (canonical RAS, MONAI resampling) or
    "official" (the authors' raw axis order and ``F.interpolate``, as the released
    checkpoints saw them; kits, lits, pancreas, colon only; evaluate it with
    ``--protocol official``, the default for such a checkpoint).
    ``rehearsal``: set by :func:`load_config` when the run is a full-mode rehearsal
    (:mod:`sam3d.rehearsal`: the recipe shrunk in size only); recorded, so its checkpoints
    and outputs are labelled as such.
    """

    name: str = "run"
    dataset: str = "phantoms"
    data_dir: str = "data/phantoms/train"
    split_file: str | None = None
    fold: int = 0
    phantoms: int = 0
    phantom_difficulty: float = 0.5
    phantom_shape: tuple[int, int, int] = (96, 96, 64)
    cache_dir: str | None = None
    model: str = "sam3d"
    crop: int | None = None
    variant: str = "vit_b"
    sam_checkpoint: str | None = None
    tuning: str | None = None
    init_from: str | None = None
    epochs: int = 500
    batch_size: int = 1
    lr: float = 4e-4
    lr_end_factor: float = 0.01
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    lambda_dice: float = 0.5
    lambda_ce: float = 0.5
    train_lesion_clicks: int = 10
    train_random_clicks: int = 20
    val_clicks: int = 10
    interaction_rounds: int = 0
    train_target: str = "crop"
    iterations_per_epoch: int | None = None
    case_weights: dict[str, float] | None = None
    val_every: int = 1
    refiner_steps: int = 0
    refiner_lr: float = 3e-3
    seed: int = 0
    workers: int = 0
    device: str = "auto"
    bf16: bool = False
    grad_checkpointing: bool = False
    out_dir: str = "outputs/train/run"
    max_minutes: float | None = None
    progress: bool = True
    tensorboard: bool = True
    rehearsal: bool = False
    preprocessing: str = "sam3d"

    def __post_init__(self):
        for field in dataclasses.fields(self):  # a folder or file given as a path: its string
            if isinstance(getattr(self, field.name), PurePath):
                object.__setattr__(self, field.name, str(getattr(self, field.name)))

        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(msg)

        need(self.dataset in SPECS, f"dataset {self.dataset!r} unknown; known: {sorted(SPECS)}")
        need(self.variant in CONFIGS, f"variant {self.variant!r} unknown; known: {sorted(CONFIGS)}")
        need(self.model in MODELS, f"model {self.model!r} unknown; known: {list(MODELS)}")
        if self.model == "sam3d":
            need(self.crop is None, "crop is set by the sam3d variant; leave crop null (it is "
                 "for the supervised baselines)")
        else:
            need(not self.grad_checkpointing,
                 f"grad_checkpointing is for the sam3d model, not the {self.model} baseline")
            need(self.crop is None or (isinstance(self.crop, int)
                                       and not isinstance(self.crop, bool) and self.crop >= 8),
                 f"crop must be an integer ≥ 8 or null, got {self.crop!r}")
            if self.crop is not None:
                try:
                    BASELINES[self.model].check_size((self.crop,) * 3)
                except ValueError as exc:
                    raise ConfigError(str(exc)) from None
        need(self.init_from is None or (isinstance(self.init_from, str) and self.init_from
                                        and self.model == "sam3d"),
             f"init_from must be a configuration name or a checkpoint path for the sam3d "
             f"model, got {self.init_from!r}" + (f" with model {self.model}"
                                                  if self.model != "sam3d" else ""))
        need(self.init_from != self.name, f"init_from names this run itself ({self.name})")
        need(self.tuning is None or self.tuning in TUNING_POLICIES,
             f"tuning {self.tuning!r} unknown; known: {sorted(TUNING_POLICIES)}")
        for key in ("batch_size", "val_every", "val_clicks"):
            need(isinstance(getattr(self, key), int) and getattr(self, key) >= 1,
                 f"{key} must be an integer ≥ 1, got {getattr(self, key)!r}")
        for key in ("train_lesion_clicks", "train_random_clicks", "phantoms", "workers", "seed",
                    "fold", "interaction_rounds", "refiner_steps"):
            need(isinstance(getattr(self, key), int) and getattr(self, key) >= 0,
                 f"{key} must be an integer ≥ 0, got {getattr(self, key)!r}")
        need(self.train_lesion_clicks + self.train_random_clicks >= 1, "no training clicks")
        fits = self.refiner_steps > 0 and self.init_from is not None
        need(isinstance(self.epochs, int) and not isinstance(self.epochs, bool)
             and (self.epochs >= 1 or (self.epochs == 0 and fits)),
             f"epochs must be an integer ≥ 1 (0 only with init_from and refiner_steps), got "
             f"{self.epochs!r}")
        need(not self.refiner_steps or (self.model == "sam3d" and self.variant in CONFIGS
                                        and CONFIGS[self.variant].refiner_only),
             f"refiner_steps needs a sam3d variant whose corrections act through the click "
             f"refiner alone (refiner_only, e.g. tiny_interactive_local), got "
             f"{self.variant!r}")
        need(isinstance(self.refiner_lr, (int, float)) and not isinstance(self.refiner_lr, bool)
             and self.refiner_lr > 0, f"refiner_lr must be a positive number, got "
                                      f"{self.refiner_lr!r}")
        need(not self.interaction_rounds or (self.model == "sam3d"
                                             and bool(CONFIGS[self.variant].prompt_levels)),
             "interaction_rounds needs a click-prompted sam3d variant (corrective clicks)")
        need(self.train_target in TARGETS,
             f"train_target must be one of {TARGETS}, got {self.train_target!r}")
        need(self.train_target == "crop" or (self.model == "sam3d" and self.train_lesion_clicks
                                             >= 1 and bool(CONFIGS[self.variant].prompt_levels)),
             f"train_target: {self.train_target} needs a click-prompted sam3d variant and "
             "train_lesion_clicks ≥ 1")
        need(self.iterations_per_epoch is None or self.iterations_per_epoch >= 1,
             "iterations_per_epoch must be ≥ 1 or null")
        need(self.case_weights is None or (
            isinstance(self.case_weights, dict) and bool(self.case_weights)
            and all(isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
                    and math.isfinite(v) and v > 0 for k, v in self.case_weights.items())),
             f"case_weights must be null or a mapping case id -> weight > 0, "
             f"got {self.case_weights!r}")
        need(self.case_weights is None or self.iterations_per_epoch is not None,
             "case_weights draws each crop's case with replacement: set iterations_per_epoch")
        need(self.lr > 0 and 0 < self.lr_end_factor <= 1, "lr must be > 0, lr_end_factor in (0, 1]")
        need(self.weight_decay >= 0 and self.grad_clip > 0, "weight_decay ≥ 0, grad_clip > 0")
        need(self.lambda_dice >= 0 and self.lambda_ce >= 0
             and self.lambda_dice + self.lambda_ce > 0,
             "loss weights must be ≥ 0 and not both 0")
        need(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
             f"device must be auto, cpu or cuda[:N], got {self.device!r}")
        need(self.max_minutes is None or self.max_minutes > 0, "max_minutes must be > 0")
        need(0.0 <= self.phantom_difficulty <= 1.0, "phantom_difficulty must be in [0, 1]")
        need(self.preprocessing in PREPROCESSING,
             f"preprocessing must be one of {PREPROCESSING}, got {self.preprocessing!r}")
        need(self.preprocessing == "sam3d" or self.dataset in OFFICIAL,
             f"preprocessing: official reads the four benchmarks ({sorted(OFFICIAL)}) as the "
             f"authors do; dataset {self.dataset!r} needs preprocessing: sam3d")
        object.__setattr__(self, "phantom_shape", tuple(int(s) for s in self.phantom_shape))

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def shipped_configs() -> list[str]:
    """Names of the runnable YAML configurations that ship with the package (a file whose name
    starts with ``_`` is a shared base, not a run)."""
    folder = resources.files("sam3d").joinpath("configs/train")
    return sorted(p.name[:-5] for p in folder.iterdir()
                  if p.name.endswith(".yaml") and not p.name.startswith("_"))


def parse_overrides(overrides: Iterable[str] | None) -> dict[str, Any]:
    """Command-line ``--set`` strings as YAML scalars: ``["epochs=3", "bf16=true",
    "tuning=null"]`` → ``{"epochs": 3, "bf16": True, "tuning": None}``."""
    if isinstance(overrides, str):
        raise TypeError("parse_overrides takes a list of key=value strings, not one string")
    out: dict[str, Any] = {}
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, value = item.split("=", 1)
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: {exc}") from None
        if isinstance(parsed, str):  # YAML 1.1 reads "2e-4" as a string; take it as a number
            with contextlib.suppress(ValueError):
                parsed = float(parsed)
        out[key.strip()] = parsed
    return out


def _read_raw(name_or_path: str | Path, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The settings of a shipped name or a YAML file, its ``base`` chain merged under it."""
    path = Path(name_or_path)
    shipped = None if "/" in str(name_or_path) else (
        resources.files("sam3d").joinpath(f"configs/train/{name_or_path}.yaml"))
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"configuration file not found: {path}")
        text = path.read_text(encoding="utf-8")
    elif shipped is not None and shipped.is_file():
        text = shipped.read_text(encoding="utf-8")
    else:
        raise ConfigError(f"unknown configuration {name_or_path!r}: not a file, and not one of "
                          f"{shipped_configs()}")
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name_or_path}: invalid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{name_or_path}: expected a mapping of settings")
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{name_or_path}: base must name another configuration, got {base!r}")
    if path.is_file() and not Path(base).is_absolute() and (path.parent / base).is_file():
        base = str(path.parent / base)  # a user's base beside their file
    if base in (*seen, str(name_or_path)):
        raise ConfigError(f"{name_or_path}: base {base!r} reads itself")
    return {**_read_raw(base, (*seen, str(name_or_path))), **raw}


def load_config(name_or_path: str | Path, overrides: Mapping[str, Any] | None = None, *,
                rehearsal: bool | None = None) -> TrainConfig:
    """A shipped configuration by name, or a YAML file, with ``overrides`` (setting → value).

    ``rehearsal`` (None: ``SAM3D_REHEARSAL`` in the environment, or ``rehearsal=true`` in the
    file or the overrides): shrink the recipe to the rehearsal's sizes
    (:mod:`sam3d.rehearsal.shrink`: the file's own folders before the overrides, the sizes
    after them). ``False`` reads the recipe as written (the paper's column of a table).
    """
    if overrides is not None and not isinstance(overrides, Mapping):
        raise TypeError("overrides must be a mapping of setting -> value; parse command-line "
                        "key=value strings with sam3d.engine.config.parse_overrides")
    raw = _read_raw(name_or_path)
    changes = dict(overrides or {})
    if rehearsal is None:
        from ..rehearsal import active

        rehearsal = active() or raw.get("rehearsal") is True or changes.get("rehearsal") is True
    if rehearsal:
        from ..rehearsal.shrink import shrink_recipe

        raw = shrink_recipe(raw)
    raw.update(changes)
    if rehearsal:
        from ..rehearsal.shrink import shrink_sizes

        raw = shrink_sizes(raw)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{name_or_path}: unknown setting(s) {unknown}")
    try:
        return TrainConfig(**raw)
    except TypeError as exc:
        raise ConfigError(f"{name_or_path}: {exc}") from None
