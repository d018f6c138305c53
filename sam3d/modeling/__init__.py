"""Model components of sam3d (see ``sam3d.build`` for the named configurations)."""

from .image_encoder import ImageEncoder3D
from .mask_decoder import MaskDecoder3D
from .prompt_encoder import PromptEncoder3D
from .sam3d import Sam3D

__all__ = ["ImageEncoder3D", "MaskDecoder3D", "PromptEncoder3D", "Sam3D"]
