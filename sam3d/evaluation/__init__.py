"""Evaluation metrics of the official protocol: Dice and normalised surface Dice (NSD)."""
