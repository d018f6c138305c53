"""Training: configuration, optimisation recipe, the loop, checkpoints and distributed set-up."""
