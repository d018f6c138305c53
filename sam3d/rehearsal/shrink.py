"""What a rehearsal shrinks: the sizes of a training recipe, never its code path.

:func:`sam3d.engine.config.load_config` calls :func:`shrink_recipe` on a shipped or YAML recipe
before the ``--set`` overrides, and :func:`shrink_sizes` on the result, whenever a rehearsal is
on (``SAM3D_REHEARSAL=1`` or ``--set rehearsal=true``). Everything else — the dataset, its
split file and fold, the loss, the optimiser, the tuning policy, the click counts, the
evaluation — stays the full recipe's.

* the model: every variant becomes its ``tiny`` counterpart of the registry (``vit_b`` →
  ``tiny``, ``auto_adapter`` → ``tiny_auto_adapter``, ``vit_b_levels_14`` → ``tiny_levels_14``);
  a supervised baseline keeps its architecture on a :data:`BASELINE_CROP`³ crop;
* the run: :data:`EPOCHS` epochs of :data:`ITERATIONS` training crops, data-loader workers
  capped at :data:`WORKERS`, the name prefixed ``rehearsal_`` (so are its cached run folders);
* the recipe's own folders (not those a caller sets): ``data/…`` → ``data/rehearsal/…``,
  ``outputs/…`` → ``outputs/rehearsal/…`` (a rehearsal never writes over a real run), and the
  SAM checkpoint → :data:`SAM_FILE`, a random SAM-format file written on first use.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from ..config import CONFIGS

EPOCHS = 2
ITERATIONS = 2
WORKERS = 1
BASELINE_CROP = 32
DATA_ROOT = "data/rehearsal"
OUTPUT_ROOT = "outputs/rehearsal"
SAM_FILE = f"{DATA_ROOT}/checkpoints/sam_tiny_random.pth"
SMALL = "tiny"


def small_variant(name: str) -> str:
    """The registered small counterpart of a variant (itself when it is already small)."""
    if name not in CONFIGS:
        raise KeyError(f"unknown model variant {name!r}")
    if name.startswith(SMALL):
        return name
    for candidate in (f"{SMALL}_{name}", name.replace("vit_b", SMALL, 1), SMALL):
        if candidate in CONFIGS and candidate != name:
            if candidate == SMALL and CONFIGS[name].prompt_levels != CONFIGS[SMALL].prompt_levels:
                continue
            return candidate
    raise KeyError(f"variant {name!r} has no small counterpart in the registry")


def _moved(path: str | None, prefix: str, root: str) -> str | None:
    if path is None:
        return None
    p = PurePosixPath(path)
    if p.is_absolute() or not p.parts or p.parts[0] != prefix or str(p).startswith(root):
        return path
    return str(PurePosixPath(root, *p.parts[1:]))


def rehearsal_output(path: str) -> str:
    """A relative ``outputs/…`` folder as a rehearsal writes it: ``outputs/rehearsal/…``
    (other paths as given)."""
    return str(_moved(path, "outputs", OUTPUT_ROOT))


def shrink_recipe(raw: dict) -> dict:
    """The recipe's own folders moved under the rehearsal roots (before any override)."""
    out = dict(raw)
    if "data_dir" in out:
        out["data_dir"] = _moved(out["data_dir"], "data", DATA_ROOT)
    if out.get("cache_dir"):
        out["cache_dir"] = _moved(out["cache_dir"], "data", DATA_ROOT)
    if "out_dir" in out:
        out["out_dir"] = _moved(out["out_dir"], "outputs", OUTPUT_ROOT)
    if out.get("sam_checkpoint"):
        from .sam_weights import write_sam_checkpoint

        out["sam_checkpoint"] = str(write_sam_checkpoint(SAM_FILE))  # relative, as the recipe
    return out


def shrink_sizes(raw: dict) -> dict:
    """Model, epochs, iterations, workers and baseline crop cut to the rehearsal's sizes."""
    out = dict(raw)
    model = out.get("model", "sam3d")
    if model == "sam3d":
        out["variant"] = small_variant(out.get("variant", "vit_b"))
    else:
        crop = out.get("crop")
        out["crop"] = BASELINE_CROP if crop is None else min(int(crop), BASELINE_CROP)
    out["epochs"] = min(int(out.get("epochs", EPOCHS)), EPOCHS)
    iterations = out.get("iterations_per_epoch")
    out["iterations_per_epoch"] = ITERATIONS if iterations is None else min(int(iterations),
                                                                            ITERATIONS)
    out["workers"] = min(int(out.get("workers", 0)), WORKERS)
    name = str(out.get("name", "run"))
    out["name"] = name if name.startswith("rehearsal_") else f"rehearsal_{name}"
    out["rehearsal"] = True
    return out
