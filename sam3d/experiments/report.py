"""Putting "paper" and "this run" side by side, and saying what kind of run it was."""

from __future__ import annotations

import time
from pathlib import Path

MODES = ("smoke", "full")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"MODE must be one of {MODES}, got {mode!r}")
    return mode


def run_label(mode: str) -> str:
    """Column suffix for a run's numbers: smoke and rehearsal results are never shown as a
    reproduction (a full-mode run is a rehearsal when :func:`sam3d.rehearsal.active`)."""
    from ..rehearsal import LABEL, active

    if check_mode(mode) == "smoke":
        return "this run (smoke: tiny model, not comparable)"
    return f"this run ({LABEL})" if active() else "this run"


def chapter_dir(chapter: str, mode: str) -> Path:
    """The folder a chapter writes its evaluations to: ``outputs/book/<mode>/<chapter>`` under
    the project root, so a smoke run never overwrites a full run's results; in a rehearsal
    (:func:`sam3d.rehearsal.active`) ``outputs/rehearsal/book/full/<chapter>``, the rule that
    moves a recipe's own folders, so a rehearsal never overwrites a real run."""
    from ..provenance import project_path
    from ..rehearsal import active
    from ..rehearsal.shrink import rehearsal_output

    if not isinstance(chapter, str) or not chapter or Path(chapter).name != chapter:
        raise ValueError(f"chapter must be a notebook name such as '03_training', got {chapter!r}")
    folder = f"outputs/book/{check_mode(mode)}/{chapter}"
    return project_path(rehearsal_output(folder) if active() else folder)


def run_stamp(prov: dict, started: float | None = None) -> str:
    """One line: mode, device, seed, commit and wall time, from
    :func:`sam3d.provenance.provenance`."""
    wall = time.time() - started if started is not None else prov.get("wall_time_s", 0.0)
    mode = f"{prov['mode']} (rehearsal)" if prov.get("rehearsal") else prov["mode"]
    return (f"{mode} mode · {prov['device']} · seed {prov['seed']} · "
            f"commit {prov['git_commit']} · {wall / 60:.1f} min")


def side_by_side(paper: list[dict], run: list[dict], on: list[str], metrics: list[str],
                 mode: str):
    """A pandas DataFrame joining reported and measured rows on the ``on`` columns.

    ``paper`` and ``run`` rows hold ``on`` keys and ``metrics`` values (percent); output columns
    are ``on`` then, per metric, ``"<metric> · paper"`` and ``"<metric> · <run_label>"``. Rows
    present on one side only keep an empty cell on the other; rows keep the paper's order,
    then the rows only this run has, in its order.
    """
    import pandas as pd

    label = run_label(mode)
    for name, rows in (("paper", paper), ("run", run)):
        for row in rows:
            missing = [k for k in on if k not in row]
            if missing:
                raise KeyError(f"a {name} row lacks the key column(s) {missing}: {row}")
    def key(row: dict) -> tuple:
        return tuple(row[k] for k in on)

    measured = {key(r): r for r in run}
    order = [key(r) for r in paper] + [key(r) for r in run if key(r) not in
                                          {key(p) for p in paper}]
    reported = {key(r): r for r in paper}
    rows = []
    for k in dict.fromkeys(order):  # paper's order first, then rows only this run has
        row = dict(zip(on, k, strict=True))
        for m in metrics:
            row[f"{m} · paper"] = reported.get(k, {}).get(m)
            row[f"{m} · {label}"] = measured.get(k, {}).get(m)
        rows.append(row)
    columns = [*on]
    for m in metrics:
        columns += [f"{m} · paper", f"{m} · {label}"]
    return pd.DataFrame(rows, columns=columns)
