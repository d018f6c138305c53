"""Inference helpers: the official single-ROI crop (:mod:`.roi`) and the mapping between the
user's image grid and the model's grid, with masks written in the input's geometry
(:mod:`.geometry`)."""
