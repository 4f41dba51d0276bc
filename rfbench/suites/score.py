"""Samples made elsewhere, scored exactly as a suite scores its own cells: ``rfbench score SAMPLES --suite NAME
--label NAME``.

A sampler that lives in another codebase writes its samples to a file; this module reads them, checks their shape
against the suite's, computes the suite's metrics with the same extractor, reference and standard errors as a run
of the suite, and adds the row to a run's folder (its ``cells/`` and ``results.csv``). Files rfbench reads:

* ``.npz`` with the samples under ``arr_0`` (the key clean-fid's and ADM's sample files use) or ``samples``:
  uint8 images NHWC (as those tools write them) or NCHW, float images NCHW in [-1, 1] (values outside are refused,
  never clipped), or (N, D) points of a toy suite (float32 must hold them); optionally ``z0`` (each sample's source
  point: the coupling metrics, crossing probability and transport cost, need it) or ``seeds`` (rfbench's seeds of
  those source points: z0 is the suite's x0 of those seeds).
  ``--save-samples`` writes ``arr_0`` and ``seeds``;
* a ``.npy`` file holding the samples array alone;
* a folder of PNG/JPEG images (all of one size, at most ``MAX_IMAGE_PIXELS`` each: 4096x4096).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from rfbench.data.base import dequantize, object_arrays_problem
from rfbench.data.images import load_image_folder
from rfbench.data.registry import check_dataset
from rfbench.device import device_name, resolve_device
from rfbench.files import sha1_files
from rfbench.models.cache import Cache
from rfbench.results import ResultStore, cell_key, provenance, write_tables
from rfbench.results.schema import MODEL_NAME_RULE, model_name_ok
from rfbench.results.store import SCORED, is_scored
from rfbench.results.report import load_results
from rfbench.suites.base import SUITES
from rfbench.suites.evaluate import Evaluation, image_eval
from rfbench.suites.plan import InputError, RunConfig, make_plan, metric_columns

SAMPLE_KEYS = ("arr_0", "samples")


class SamplesError(ValueError):
    """A samples file that cannot be scored: unreadable, of an unknown layout, or of another shape than the suite's."""


def read_samples(path: str | Path, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                    np.ndarray | None, str]:
    """The samples (float32, (N, *shape), images in [-1, 1]), their source points and seeds when the file has
    them, and a description of the layout found."""
    path = Path(path)
    z0 = seeds = None
    if path.is_dir():
        x = load_image_folder(str(path))
        layout = f"a folder of {len(x)} images"
    elif path.is_file():
        if (problem := object_arrays_problem(path)) is not None:
            raise SamplesError(problem)
        try:
            loaded = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise SamplesError(f"{path} is not a readable .npz or .npy file ({type(exc).__name__}: {exc})") from None
        if isinstance(loaded, np.ndarray):
            arr = loaded
        else:
            with loaded as data:
                key = next((k for k in SAMPLE_KEYS if k in data.files), None)
                if key is None:
                    raise SamplesError(f"{path}: no samples array; expected one of {', '.join(SAMPLE_KEYS)} (found "
                                       f"{', '.join(data.files) or 'nothing'})")
                arr = data[key]
                z0 = _as_float32(path, "z0", data["z0"]) if "z0" in data.files else None
                seeds = np.asarray(data["seeds"]) if "seeds" in data.files else None
        x, layout = _layout(path, arr, shape)
    else:
        raise SamplesError(f"samples not found: {path} (an .npz file or a folder of images)")
    if tuple(x.shape[1:]) != tuple(shape):
        raise SamplesError(f"{path}: samples of shape (N, {', '.join(map(str, x.shape[1:]))}) ({layout}); the suite's "
                           f"samples have shape (N, {', '.join(map(str, shape))})")
    if len(x) < 2:
        raise SamplesError(f"{path}: {len(x)} sample(s); scoring needs at least 2")
    if z0 is not None and tuple(z0.shape) != tuple(x.shape):
        raise SamplesError(f"{path}: z0 has shape {tuple(z0.shape)}, the samples {tuple(x.shape)}; they must match")
    if seeds is not None and seeds.shape != (len(x),):
        raise SamplesError(f"{path}: seeds has shape {seeds.shape}; one seed per sample ({len(x)}) expected")
    return x, z0, seeds, layout


def _layout(path: Path, arr: np.ndarray, shape: tuple[int, ...]) -> tuple[torch.Tensor, str]:
    if arr.ndim == 4 and arr.dtype == np.uint8:
        if arr.shape[-1] in (1, 3) and (arr.shape[1] not in (1, 3) or tuple(arr.shape[1:3]) == tuple(shape[1:])):
            return (dequantize(torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()),
                    f"uint8 NHWC images {tuple(arr.shape)}")
        if arr.shape[1] in (1, 3):
            return dequantize(torch.from_numpy(arr)), f"uint8 NCHW images {tuple(arr.shape)}"
        raise SamplesError(f"{path}: uint8 images of shape {arr.shape} have neither 1 or 3 channels last (NHWC) nor "
                           f"first (NCHW)")
    if arr.dtype.kind == "f":
        x = _as_float32(path, "the samples", arr)
        if arr.ndim == 4:
            low, high = float(x.min()), float(x.max())
            outside = int(((x < -1) | (x > 1)).sum())
            if outside:     # never clipped here: the row would score other images than the file holds
                raise SamplesError(f"{path}: float images must be NCHW in [-1, 1]; {outside} of {x.numel()} values "
                                   f"({100 * outside / x.numel():.3g}%) lie outside it, in [{low:.3g}, {high:.3g}]: "
                                   f"clip them to [-1, 1] or write uint8 images")
            if low >= 0:
                raise SamplesError(f"{path}: float images must be NCHW in [-1, 1]; these lie in [{low:.3g}, "
                                   f"{high:.3g}], as images in [0, 1] would: write them as uint8, or as 2x - 1")
            return x, f"float NCHW images in [-1, 1] {tuple(arr.shape)}"
        return x, f"float samples {tuple(arr.shape)}"
    raise SamplesError(f"{path}: samples of dtype {arr.dtype} and shape {arr.shape}; expected uint8 images (NHWC or "
                       f"NCHW), float NCHW images in [-1, 1] or float (N, D) points")


def _as_float32(path: Path, what: str, arr: np.ndarray) -> torch.Tensor:
    """A float array of the file as float32 (what samples are scored in); NaN, inf, or finite values beyond
    float32's range (which would become inf) are a SamplesError naming the file."""
    arr = np.asarray(arr)
    finite = np.isfinite(arr)
    if not finite.all():
        raise SamplesError(f"{path}: {what} contain NaN or inf ({int((~finite).sum())} of {arr.size} values)")
    largest, limit = float(np.abs(arr).max(initial=0.0)), float(np.finfo(np.float32).max)
    if largest > limit:
        raise SamplesError(f"{path}: {what} hold values up to {largest:.3g} in absolute value ({arr.dtype}), beyond "
                           f"float32's range ({limit:.3g}), in which samples are scored")
    return torch.from_numpy(arr.astype(np.float32))


def score_samples(path: str | Path, suite: str, label: str, config: RunConfig = RunConfig(), *,
                  out: str | Path, nfe: float | None = None, solver: str = "external", steps: int | None = None,
                  log: Callable[[str], None] = print) -> tuple[dict, Path]:
    """Score the samples in ``path`` as suite ``suite`` scores its cells and add the row (model ``label``) to the
    run folder ``out``; returns the row and the results.csv written. A label that names a model whose cells a run
    wrote into ``out`` is refused (ValueError): a scored row never stands in a run's cell."""
    definition = SUITES[suite]
    plan = make_plan(definition, config)
    if not model_name_ok(label):
        raise ValueError(f"--label (the row's model) must be {MODEL_NAME_RULE}, got {label!r}")
    out = Path(out)
    before = _folder_table(out, plan.name, plan.version)
    _check_label(out, label, before)
    problem = plan.problem
    missing = []
    if getattr(problem, "dataset", None) is not None and plan.reference_file is None:
        try:
            check_dataset(problem.dataset, problem.reference_split, problem.data_dir)
        except FileNotFoundError as exc:
            missing.append(str(exc))
    if plan.reference_file is not None and not Path(plan.reference_file).is_file():
        missing.append(f"--ref-stats {plan.reference_file}: no such file")
    if missing:
        raise InputError(missing)
    x, z0, seeds, layout = read_samples(path, tuple(problem.shape))
    if z0 is None and seeds is not None:       # rfbench's own samples: their source points are the suite's x0
        z0 = problem.initial([int(s) for s in seeds])
    device = resolve_device(config.device)
    reference = problem.reference(len(x))
    images = image_eval(plan, Cache(config.cache_dir, log=log).root, device, dict(config.extractor_options), log,
                        images=reference)
    evaluation = Evaluation(plan, reference, images)
    values = evaluation.cell_metrics(evaluation.inputs(z0, x))
    digest = sha1_files(*sorted(p for p in Path(path).rglob("*") if p.is_file())) if Path(path).is_dir() \
        else sha1_files(path)
    notes = list(evaluation.notes) + [f"scored from {Path(path).name} ({layout})"]
    if z0 is None:
        notes.append("crossing_prob and transport_cost empty: the file has no z0 or seeds (the samples' source "
                     "points)")
    if len(x) < definition.num_samples:
        notes.append(f"{len(x)} samples, fewer than the suite's default {definition.num_samples}: not comparable "
                     f"with default runs or published numbers")
    notes.append("straightness empty: a property of a flow, not of samples")
    row = {"suite": plan.name, "suite_version": plan.version, "model": label, "solver": solver, "steps": steps,
           "options": "", "nfe": nfe, "n_samples": len(x),
           "seed": int(seeds[0]) if seeds is not None else None,
           "seeds": f"{int(seeds[0])}-{int(seeds[-1])}" if seeds is not None else None,
           "wall_clock_s": None, "samples_per_s": None, "ms_per_nfe": None, **evaluation.fields, **values,
           "bootstrap": plan.bootstrap, "model_kind": None, "model_source": f"{SCORED} ({layout})",
           "model_id": f"sha1:{digest[:12]}", "model_checkpoint": f"{Path(path).name} (sha1 {digest[:12]})",
           **provenance(device_name(device), "float32"), "notes": "; ".join(notes), "status": "ok", "error": None}
    store = ResultStore(out, metric_columns(plan))
    key = cell_key(row)
    store.write(row, key=key)
    frame = store.load(keys=[key])
    if before is not None:     # this row replaces only a row scored before under the same label, solver and steps
        same = ((before["model"].astype(str) == label) & (before["solver"].astype(str) == solver)
                & (before["steps"].astype("Float64").fillna(-1) == (steps if steps is not None else -1))
                & _scored_rows(before))
        frame = pd.concat([before[~same], frame], ignore_index=True)
    return row, write_tables(frame, out)[0]


def _folder_table(out: Path, suite: str, version: int) -> pd.DataFrame | None:
    """The table of the run folder ``out`` (None without results.csv); a folder that holds another suite's (or
    version's) results does not take this row."""
    if not (out / "results.csv").is_file():
        return None
    frame = load_results(out)
    if "suite" in frame and len(frame):
        found = {(str(s), int(v)) for s, v in zip(frame["suite"], frame["suite_version"])}
        if found != {(suite, version)}:
            raise ValueError(f"--out {out} holds results of {', '.join(f'{s} v{v}' for s, v in sorted(found))}, not "
                             f"{suite} v{version}; score into another folder")
    return frame


def _check_label(out: Path, label: str, table: pd.DataFrame | None) -> None:
    """A row scored from samples made elsewhere never stands in a run's cell: refuse a label that names a model whose
    cells a run wrote into ``out`` (its cells/ or its results.csv)."""
    cells = ResultStore(out).model_cells(scored=False)
    where = f"cells/{cells[label]}.json" if label in cells else None
    if where is None and table is not None and "model" in table:
        run_rows = table[(table["model"].astype(str) == label) & ~_scored_rows(table)]
        where = "results.csv" if len(run_rows) else None
    if where is not None:
        raise ValueError(f"--label {label}: --out {out} holds a run's cells of its model {label} ({where}); a scored "
                         f"row may not stand beside or in place of them: pick another label (e.g. {label}-external)")


def _scored_rows(table: pd.DataFrame) -> pd.Series:
    """Which rows of a run folder's table ``rfbench score`` added (:func:`rfbench.results.store.is_scored`)."""
    if "model_source" not in table:
        return pd.Series(False, index=table.index)
    return table["model_source"].map(lambda source: is_scored({"model_source": source})).astype(bool)


def scored_clashes(out: str | Path, models: Sequence[str]) -> list[str]:
    """One line for each of a run's ``models`` whose name labels a row that ``rfbench score`` added to the run folder
    ``out``: the run would put its cells beside a row of samples made elsewhere under the same name."""
    try:
        scored = ResultStore(out).model_cells(scored=True)
    except OSError:         # a folder that cannot be read: folder_problem says so
        return []
    return [f"--out {out} holds a row that rfbench score added under the label {name} (cells/{scored[name]}.json), "
            f"the name of a model of this run: give the run another --out, or move that file out of cells/ and "
            f"score the samples again under another label" for name in models if name in scored]
