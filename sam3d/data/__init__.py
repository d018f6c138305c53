"""Data: sample volumes (and, later, the benchmark datasets and the MONAI pipeline)."""
