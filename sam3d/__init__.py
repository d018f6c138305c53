"""sam3d: a tested re-implementation of 3DSAM-adapter (Gong et al., 2023)."""

from .config import CONFIGS, Sam3DConfig, get_config

__all__ = ["CONFIGS", "Sam3DConfig", "build_sam3d", "get_config"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """``build_sam3d`` on first use: it imports torch, which ``sam3d.data`` (the download and
    prepare scripts) does not need, so ``import sam3d.data.sources`` stays quick."""
    if name == "build_sam3d":
        from .build import build_sam3d

        globals()["build_sam3d"] = build_sam3d
        return build_sam3d
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
