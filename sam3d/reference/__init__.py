"""The paper's reported numbers (reference data, never a result of this project).

Transcribed from the paper's slides into ``table1_baselines.csv``, ``table2_peft.csv`` and
``table3_feature_level.csv`` (Dice and NSD in percent). The book shows them beside the numbers
of its own runs; they are labelled "paper" wherever they appear.
"""

from __future__ import annotations

import csv
from importlib import resources

TABLES = {
    "table1": "table1_baselines.csv",
    "table2": "table2_peft.csv",
    "table3": "table3_feature_level.csv",
}
DATASET_COLUMNS = {"kits": "kidney", "pancreas": "pancreas", "lits": "liver", "colon": "colon"}


_NUMERIC = ("_dice", "_nsd", "_M")


def _value(column: str, text: str) -> float | str | None:
    """Metric and parameter-count columns as floats (empty: None); key columns stay text
    (Table 3's level "4" is a name, not a number)."""
    if not column.endswith(_NUMERIC):
        return text
    return None if text == "" else float(text)


def paper_rows(table: str) -> list[dict]:
    """Rows of a reported table (``table1``, ``table2`` or ``table3``); metrics and counts as
    floats (empty cells as ``None``), key columns as text."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; known: {sorted(TABLES)}")
    text = resources.files(__name__).joinpath(TABLES[table]).read_text(encoding="utf-8")
    return [{k: _value(k, v) for k, v in row.items()} for row in csv.DictReader(text.splitlines())]


def paper_metric(row: dict, dataset: str, metric: str) -> float | None:
    """The reported ``metric`` ("dice" or "nsd", percent) of ``dataset`` (kits, pancreas, lits,
    colon) in one row of a table."""
    if dataset not in DATASET_COLUMNS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {sorted(DATASET_COLUMNS)}")
    if metric not in ("dice", "nsd"):
        raise ValueError(f"metric must be 'dice' or 'nsd', got {metric!r}")
    return row.get(f"{DATASET_COLUMNS[dataset]}_{metric}")


def paper_tuned_params_M(method: str = "3DSAM-adapter") -> dict[str, float | None]:
    """The paper's "#Tuned Params" of ``method``, in millions (None where it reports none).

    ``image_encoder``: the tuned image-encoder parameters of Table 2 (3DSAM-adapter: 15.21);
    ``model``: the whole model's of Table 1 (3DSAM-adapter: 25.46, one figure for all its
    prompt rows). A method in neither table is refused.
    """
    encoder = [r["tuned_params_image_encoder_M"] for r in paper_rows("table2")
               if r["method"] == method]
    model = {r["tuned_params_M"] for r in paper_rows("table1") if r["method"] == method}
    if not encoder and not model:
        raise ValueError(f"{method!r} is in neither Table 1 nor Table 2")
    if len(model) > 1:
        raise ValueError(f"Table 1 reports several counts for {method!r}: {sorted(model)}")
    return {"image_encoder": encoder[0] if encoder else None,
            "model": next(iter(model)) if model else None}
