"""sam3d: a tested re-implementation of 3DSAM-adapter (Gong et al., 2023)."""

from .build import build_sam3d
from .config import CONFIGS, Sam3DConfig, get_config

__all__ = ["CONFIGS", "Sam3DConfig", "build_sam3d", "get_config"]
__version__ = "0.1.0"
