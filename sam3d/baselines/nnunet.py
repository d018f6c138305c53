"""The nnU-Net baseline of Table 1, run through nnU-Net v2 itself
(``pip install sam3d[baselines]``).

Nothing of nnU-Net is re-implemented here: this module only converts a dataset in the common
layout (:mod:`sam3d.data.layout`) into nnU-Net v2's raw format, runs nnU-Net's own integrity
check, and spells out (or runs) nnU-Net's documented commands. The paper's authors used
nnU-Net v1 with their fold-0 split; v1 no longer installs with current PyTorch, so v2 is used.

Raw format written by :func:`export_nnunet` (``Dataset{id:03d}_{name}`` under ``out_raw``)::

    dataset.json            nnU-Net v2: channel_names {"0": "CT"}, labels {"background": 0,
                            "lesion": 1}, numTraining, file_ending ".nii.gz" (+ provenance)
    imagesTr/<case>_0000.nii.gz   train + val cases, the CT copied byte for byte (HU kept:
                                  nnU-Net's "CT" normalisation is its own)
    labelsTr/<case>.nii.gz        binary: the case's target label → 1, everything else → 0
    imagesTs/<case>_0000.nii.gz   test cases (labelsTs/ holds their binary labels, for scoring)
    splits_final.json       [{"train": [...], "val": [...]}]: our split as nnU-Net's fold 0

``splits_final.json`` belongs in ``$nnUNet_preprocessed/Dataset{id:03d}_{name}/``. nnU-Net
v2 (≥ 2.5) copies it there itself when ``nnUNetv2_plan_and_preprocess`` finds it in the raw
folder; :func:`install_split` places it by hand. Without it nnU-Net would draw its own 5-fold
split over train + val.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np

from ..data.layout import DatasetIndex, read_index
from ..data.splits import PARTS, check_split, load_split, resolve_split
from ..utils.files import atomic_write, replace_dir

#: The nnU-Net v2 release this module was written and tested against (extra ``baselines``).
NNUNET_VERSION = "2.8.1"
FILE_ENDING = ".nii.gz"
CHANNEL = "0000"  # the one input channel: CT
LABELS = {"background": 0, "lesion": 1}
SPLITS_FILE = "splits_final.json"
CONFIGURATIONS = ("2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


class NnUNetError(RuntimeError):
    """An export cannot be written, or nnU-Net rejects it."""


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``Dataset{id:03d}_{name}``, nnU-Net v2's folder name (id 1–999, name ``[A-Za-z0-9_-]``)."""
    if (isinstance(dataset_id, bool) or not isinstance(dataset_id, int)
            or not 1 <= dataset_id <= 999):
        raise ValueError(f"dataset_id must be an integer in 1..999, got {dataset_id!r}")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"name must be letters, digits, '_' or '-' (not starting with '_' "
                         f"or '-'), got {name!r}")
    return f"Dataset{dataset_id:03d}_{name}"


def splits_final(split: dict[str, list[str]]) -> list[dict[str, list[str]]]:
    """nnU-Net's ``splits_final.json`` content: one fold, train = our train, val = our val."""
    check_split(split)
    return [{"train": sorted(split["train"]), "val": sorted(split["val"])}]


def _split_for(index: DatasetIndex, split, seed: int) -> dict[str, list[str]]:
    if split is None:
        split = resolve_split(index.name, index.case_ids(), seed=seed)
    elif isinstance(split, (str, Path)):
        split = load_split(split)
    split = {part: list(split.get(part, [])) for part in PARTS}
    check_split(split)
    unknown = sorted(set().union(*split.values()) - set(index.cases))
    if unknown:
        raise NnUNetError(f"{len(unknown)} split case(s) not in {index.root}: {unknown[:3]}")
    for part in ("train", "val"):
        if not split[part]:
            raise NnUNetError(f"the split has no {part} case; nnU-Net fold 0 needs both train "
                              "and val cases")
    return split


def _write_binary_label(src: Path, dst: Path, target: int) -> int:
    """Write ``dst``: uint8, 1 where ``src == target`` (none when ``target`` is 0), same grid.

    Returns the number of lesion voxels.
    """
    import nibabel as nib

    img = nib.load(src)
    data = np.asanyarray(img.dataobj)
    mask = (data == target) if target > 0 else np.zeros(data.shape, dtype=bool)
    header = img.header.copy()
    header.set_data_dtype(np.uint8)
    out = nib.Nifti1Image(mask.astype(np.uint8), img.affine, header)
    out.header.set_slope_inter(1.0, 0.0)
    nib.save(out, dst)
    return int(mask.sum())


def export_nnunet(prepared_root: str | Path, out_raw: str | Path, dataset_id: int, name: str,
                  *, split: dict | str | Path | None = None, target: int | None = None,
                  overwrite: bool = False, seed: int = 0) -> Path:
    """Write a prepared dataset as nnU-Net v2 raw dataset ``out_raw/Dataset{id:03d}_{name}``.

    ``split``: a train/val/test dict, a split file, or None for :func:`resolve_split` (the
    official fold 0 for the benchmark datasets, else the seeded split with ``seed``). Train and
    val cases go to ``imagesTr``/``labelsTr``, test cases to ``imagesTs``/``labelsTs``.
    ``target``: the lesion label for every case (default: each case's own target; a case with
    target 0 has no lesion and gets an empty label). The folder is built under a temporary
    name in ``out_raw`` and renamed into place; an existing one is replaced only with
    ``overwrite=True``. Returns the dataset folder.
    """
    folder = dataset_folder_name(dataset_id, name)
    if target is not None and (isinstance(target, bool) or not isinstance(target, int)
                               or target < 1):
        raise ValueError(f"target must be a positive label value or None, got {target!r}")
    index = read_index(prepared_root)
    split = _split_for(index, split, seed)
    out_raw = Path(out_raw)
    final = out_raw / folder
    clash = sorted(p.name for p in out_raw.glob(f"Dataset{dataset_id:03d}_*") if p.name != folder)
    if clash:
        raise NnUNetError(f"{out_raw} already holds {clash[0]} with id {dataset_id:03d}; nnU-Net "
                          "finds datasets by id, so choose another id")
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} exists; pass overwrite=True to replace it")
    out_raw.mkdir(parents=True, exist_ok=True)
    tmp = out_raw / f".{folder}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        targets, lesion = {}, {}
        for sub, parts in (("Tr", ("train", "val")), ("Ts", ("test",))):
            (tmp / f"images{sub}").mkdir()
            (tmp / f"labels{sub}").mkdir()
            for case_id in sorted(i for p in parts for i in split[p]):
                case = index.cases[case_id]
                if not case.image.name.endswith(FILE_ENDING):
                    raise NnUNetError(f"{case.image}: expected a {FILE_ENDING} file")
                shutil.copyfile(case.image,
                                tmp / f"images{sub}" / f"{case_id}_{CHANNEL}{FILE_ENDING}")
                targets[case_id] = case.target if target is None else target
                lesion[case_id] = _write_binary_label(
                    case.label, tmp / f"labels{sub}" / f"{case_id}{FILE_ENDING}", targets[case_id])
        n_train = len(split["train"]) + len(split["val"])
        doc = {
            "channel_names": {"0": "CT"},
            "labels": dict(LABELS),
            "numTraining": n_train,
            "file_ending": FILE_ENDING,
            "name": folder,
            "description": f"binary lesion task exported by sam3d from {index.name!r}",
            "numTest": len(split["test"]),
            "sam3d": {"source": str(Path(prepared_root).resolve()), "dataset": index.name,
                      "split": {p: sorted(split[p]) for p in PARTS}, "target": targets,
                      "lesion_voxels": lesion},
        }
        (tmp / "dataset.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        (tmp / SPLITS_FILE).write_text(json.dumps(splits_final(split), indent=1) + "\n",
                                       encoding="utf-8")
        replace_dir(tmp, final)  # the previous export is put back if the swap fails
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def install_split(dataset_dir: str | Path, preprocessed: str | Path) -> Path:
    """Copy ``dataset_dir/splits_final.json`` to ``preprocessed/<dataset folder>/``; returns it."""
    dataset_dir = Path(dataset_dir)
    src = dataset_dir / SPLITS_FILE
    if not src.is_file():
        raise NnUNetError(f"{src} not found: export the dataset with export_nnunet first")
    dst = Path(preprocessed) / dataset_dir.name / SPLITS_FILE
    return atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def _require_nnunet() -> None:
    if importlib.util.find_spec("nnunetv2") is None:
        raise NnUNetError("nnunetv2 is not installed: pip install -c constraints.txt "
                          "'sam3d[baselines]'")


_VERIFY = ("import sys\n"
           "from nnunetv2.experiment_planning.verify_dataset_integrity import "
           "verify_dataset_integrity\n"
           "verify_dataset_integrity(sys.argv[1], int(sys.argv[2]))\n")
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception)\b")
_NOISE = re.compile(r"^(Using <class|#+$|verify_dataset_integrity Done|If you didn't see)")


def check_names(dataset_dir: str | Path) -> None:
    """File names as nnU-Net wants them: ``images{Tr,Ts}/<case>_XXXX<ending>`` with every channel
    of ``dataset.json`` present, and one ``labelsTr/<case><ending>`` per training case.

    nnU-Net's own check reports a wrongly named file only indirectly (as a case without label,
    or a wrong case count); this says which file is wrong.
    """
    dataset_dir = Path(dataset_dir)
    try:
        doc = json.loads((dataset_dir / "dataset.json").read_text(encoding="utf-8"))
        ending, n_channels = doc["file_ending"], len(doc["channel_names"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NnUNetError(f"{dataset_dir}: no usable nnU-Net dataset.json ({exc})") from None
    pattern = re.compile(r"(.+)_(\d{4})" + re.escape(ending))
    expected = {f"{c:04d}" for c in range(n_channels)}
    for sub in ("imagesTr", "imagesTs"):
        channels: dict[str, set[str]] = {}
        for f in sorted((dataset_dir / sub).glob(f"*{ending}")):
            m = pattern.fullmatch(f.name)
            if m is None:
                raise NnUNetError(f"{f}: not named <case>_XXXX{ending} (channel index missing)")
            channels.setdefault(m[1], set()).add(m[2])
        for case, found in channels.items():
            if found != expected:
                raise NnUNetError(f"{dataset_dir / sub}: case {case!r} has channel files "
                                  f"{sorted(found)}, dataset.json wants {sorted(expected)}")
        if sub == "imagesTr":
            labels = {f.name[: -len(ending)] for f in (dataset_dir / "labelsTr").glob(f"*{ending}")}
            if labels != set(channels):
                raise NnUNetError(f"{dataset_dir}: labelsTr without images: "
                                  f"{sorted(labels - set(channels))}; images without labels: "
                                  f"{sorted(set(channels) - labels)}")


def verify(dataset_dir: str | Path, num_processes: int = 1, timeout: float | None = 600) -> str:
    """Run nnU-Net v2's own check (``verify_dataset_integrity``) on ``dataset_dir``.

    File names are checked first (:func:`check_names`, for a clearer message). nnU-Net's check
    runs in a child process so that everything it (and its worker pool) prints is captured.
    Returns that output; raises :class:`NnUNetError` with nnU-Net's error lines when it fails.
    """
    _require_nnunet()
    if num_processes < 1:
        raise ValueError(f"num_processes must be ≥ 1, got {num_processes}")
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise NnUNetError(f"{dataset_dir}: no such dataset folder")
    check_names(dataset_dir)
    try:
        proc = subprocess.run([sys.executable, "-c", _VERIFY, str(dataset_dir), str(num_processes)],
                              capture_output=True, text=True, encoding="utf-8", errors="replace",
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise NnUNetError(
            f"nnU-Net's integrity check of {dataset_dir} took over {timeout} s") from None
    output = proc.stdout + proc.stderr
    if proc.returncode == 0:
        return output
    err_lines = [ln.rstrip() for ln in proc.stderr.strip().splitlines() if ln.strip()]
    # the raised exception: its "SomeError: …" line and any continuation lines of its message
    starts = [i for i, ln in enumerate(err_lines) if _EXCEPTION.match(ln)]
    reason = (" ".join(err_lines[starts[-1]:][:10]) if starts
              else err_lines[-1] if err_lines else f"exit status {proc.returncode}")
    details = [ln.rstrip() for ln in proc.stdout.splitlines()
               if ln.strip() and not _NOISE.match(ln)]
    raise NnUNetError(f"nnU-Net's integrity check (verify_dataset_integrity) rejected "
                      f"{dataset_dir}: {reason}"
                      + ("\n" + "\n".join(details[-40:]) if details else ""))


def environment(raw: str | Path, preprocessed: str | Path, results: str | Path) -> dict[str, str]:
    """The three environment variables nnU-Net v2 reads its folders from (absolute paths)."""
    return {"nnUNet_raw": str(Path(raw).resolve()),
            "nnUNet_preprocessed": str(Path(preprocessed).resolve()),
            "nnUNet_results": str(Path(results).resolve())}


def steps(dataset_id: int, name: str, *, raw: str | Path, results: str | Path,
          configuration: str = "3d_fullres", fold: int = 0, trainer: str = "nnUNetTrainer",
          plans: str = "nnUNetPlans", device: str = "cuda",
          predictions: str | Path | None = None, evaluate: bool = True) -> list[list[str]]:
    """nnU-Net v2's documented commands as argument lists: plan + preprocess (with its
    integrity check), train ``fold`` of ``configuration``, predict ``imagesTs``, and (when
    ``evaluate``) score the predictions against ``labelsTs`` with nnU-Net's evaluator.
    """
    folder = dataset_folder_name(dataset_id, name)
    if configuration not in CONFIGURATIONS:
        raise ValueError(f"configuration must be one of {CONFIGURATIONS}, got {configuration!r}")
    if isinstance(fold, bool) or not isinstance(fold, int) or fold < 0:
        raise ValueError(f"fold must be a non-negative integer, got {fold!r}")
    raw_dir = Path(raw).resolve() / folder
    model_dir = Path(results).resolve() / folder / f"{trainer}__{plans}__{configuration}"
    pred = (Path(predictions) if predictions is not None
            else Path(results).resolve() / folder
            / f"predictions_imagesTs_{configuration}_fold{fold}")
    d = str(dataset_id)
    cmds = [
        ["nnUNetv2_plan_and_preprocess", "-d", d, "-c", configuration,
         "--verify_dataset_integrity"],
        ["nnUNetv2_train", d, configuration, str(fold), "-tr", trainer, "-p", plans,
         "-device", device],
        ["nnUNetv2_predict", "-i", str(raw_dir / "imagesTs"), "-o", str(pred), "-d", d,
         "-c", configuration, "-f", str(fold), "-tr", trainer, "-p", plans, "-device", device],
    ]
    if evaluate:
        cmds.append(["nnUNetv2_evaluate_folder", str(raw_dir / "labelsTs"), str(pred),
                     "-djfile", str(model_dir / "dataset.json"),
                     "-pfile", str(model_dir / "plans.json")])
    return cmds


def commands(dataset_id: int, name: str, *, raw: str | Path, preprocessed: str | Path,
             results: str | Path, **kwargs) -> list[str]:
    """Shell lines: ``export nnUNet_raw=… nnUNet_preprocessed=… nnUNet_results=…``, then the
    commands of :func:`steps` (same keyword arguments)."""
    env = environment(raw, preprocessed, results)
    export = "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    return [export] + [shlex.join(c) for c in steps(dataset_id, name, raw=raw, results=results,
                                                      **kwargs)]


def _executable(tool: str) -> str:
    local = Path(sys.executable).parent / tool
    found = str(local) if local.is_file() else shutil.which(tool)
    if found is None:
        raise NnUNetError(f"{tool} not found: pip install -c constraints.txt 'sam3d[baselines]'")
    return found


def run(dataset_id: int, name: str, *, raw: str | Path, preprocessed: str | Path,
        results: str | Path, **kwargs) -> None:
    """Run the commands of :func:`steps` one after another (a GPU job: hours per dataset).

    The split is placed in ``preprocessed`` first (:func:`install_split`), so nnU-Net's fold 0
    is our train/val split; a failing command raises :class:`subprocess.CalledProcessError`.
    """
    _require_nnunet()
    install_split(Path(raw) / dataset_folder_name(dataset_id, name), preprocessed)
    env = {**os.environ, **environment(raw, preprocessed, results)}
    Path(env["nnUNet_results"]).mkdir(parents=True, exist_ok=True)
    for argv in steps(dataset_id, name, raw=raw, results=results, **kwargs):
        subprocess.run([_executable(argv[0]), *argv[1:]], env=env, check=True)
