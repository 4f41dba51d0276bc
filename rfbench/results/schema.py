"""The one results schema: which columns a row has, in which order, how each is typed, and what each one is for.

Everything that must agree on columns is derived from :data:`SCHEMA`:

* the cell key (:data:`KEY_FIELDS`): the file name of a stored cell; a run resumes a cell only under the same key;
* the gate's identity (:data:`RUN_IDENTITY`: a run is compared with a baseline only when these agree;
  :data:`MODEL_IDENTITY`: per model; :data:`CELL`: which rows are the same cell);
* the resume check (:data:`RESUME_FIELDS`: beyond the key, a kept cell must have been measured alike);
* the table's column order (:func:`table_columns`; the metrics' own columns come from the metric registry, at
  :data:`METRICS_AFTER`);
* the integer columns read back from CSV (:data:`INTEGER`).

Torch-free, like the store and the gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence


@dataclass(frozen=True)
class Column:
    """A result column. ``key``: identifies the cell (part of the cell key). ``gate``: "run" (must be equal between
    a run and the baseline it is checked against), "model" (must be equal for each model), "cell" (names the cell
    the gate compares). ``resume``: a resumed cell is kept only when equal. ``default``: the value of a record that
    lacks the column (written before it existed); a key column at its default is left out of the cell key, so
    adding one keeps the keys of every cell stored before."""

    name: str
    dtype: Literal["str", "int", "number", "bool"]
    what: str
    key: bool = False
    gate: Literal["run", "model", "cell"] | None = None
    resume: bool = False
    default: str | None = None


SCHEMA: tuple[Column, ...] = (
    Column("suite", "str", "the suite's name", key=True, gate="run"),
    Column("suite_version", "int", "the suite's version (bumped whenever its numbers would change)", key=True,
           gate="run"),
    Column("model", "str", "the model's name in the suite (independent: the independent coupling)", key=True,
           gate="cell"),
    Column("solver", "str", "the solver (none for the independent row)", key=True, gate="cell"),
    Column("steps", "int", "steps of a fixed-grid or discrete solver (empty: adaptive)", key=True, gate="cell"),
    Column("grid", "str", "the time grid (fixed-grid solvers) or timestep spacing (discrete ones); empty: adaptive",
           key=True, gate="cell"),
    Column("grid_times", "str", "the flow times a searched grid (gits) chose for the cell, comma-separated"),
    Column("grid_search_nfe", "number", "model evaluations per searched row that the grid's search spent (not in nfe)"),
    Column("grid_search_rows", "int", "the rows (the suite's first seeds) the grid was searched on"),
    Column("nfe", "number", "model evaluations, counted (the batch-weighted mean for adaptive solvers in batches)"),
    Column("n_samples", "int", "samples in the cell", key=True, gate="run"),
    Column("seed", "int", "the first seed", key=True),
    Column("seeds", "str", "the seed range", gate="run"),
    Column("wall_clock_s", "number", "sampling time of the cell (the median of --repeats timed runs)"),
    Column("samples_per_s", "number", "n_samples / wall_clock_s"),
    Column("ms_per_nfe", "number", "median over batches of a batch's time per model evaluation"),
    Column("model_metrics_solver", "str", "the trajectory the model-scope metrics (straightness) were computed on"),
    Column("status", "str", "ok or failed"),
    Column("error", "str", "why a failed cell failed"),
    Column("notes", "str", "why a column is empty, or what makes the row not comparable"),
    Column("options", "str", "the solver's options (k=v,...)", key=True, gate="cell"),
    Column("net_dtype", "str", "the network evaluations' arithmetic (--dtype): fp32, tf32, bf16 or fp16 autocast; "
           "the solver's state stays float32", key=True, gate="run", default="fp32"),
    Column("compile", "str", "torch.compile mode of the network (--compile), off: eager", key=True, gate="run",
           default="off"),
    Column("memory_format", "str", "the network's memory format (--channels-last)", key=True, gate="run",
           default="contiguous"),
    Column("compile_s", "number", "the cell's untimed warm-up, once per batch shape, compilation included (--compile)"),
    Column("cell_origin", "str", "suite: one of the suite's own cells; run (...): chosen by the run's --solvers, "
           "--steps, --grids, --solver-option or an added model (said which)"),
    Column("batch_size", "int", "samples per sampler call (rk45's steps depend on it)", resume=True),
    Column("bootstrap", "int", "replicates of the resampled standard errors", resume=True),
    Column("solver_stats", "str", "the solver's own counts (accepted and rejected steps, batches)"),
    Column("timing", "str", "how wall_clock_s was measured (warm-up, timed runs, fresh noise after the first, "
           "processes)", resume=True),
    Column("threads", "int", "torch's CPU threads while the cell was sampled (rfbench.threads)", resume=True),
    Column("load_start", "number", "the machine's 1-minute load average before the cell's timed runs"),
    Column("load_end", "number", "the load average after them (above the core count: timed on a busy machine)"),
    Column("extractor", "str", "the feature extractor of the image metrics", key=True, gate="run"),
    Column("reference", "str", "what the image metrics compare with", key=True, gate="run"),
    Column("model_kind", "str", "flow, one-step or diffusion"),
    Column("model_source", "str", "what the model is: a recipe trained by rfbench, a file's format, a factory"),
    Column("model_id", "str", "the model's identity: its recipe's hash, its file's sha1, its factory", key=True,
           gate="model"),
    Column("model_checkpoint", "str", "the trained model's cache entry, or the file's name and sha1"),
    Column("train_nfe", "int", "network evaluations that training the model took, counted (one sample through one "
           "network's forward = 1, its backward = 1 more; the model's own training, its parents' and teachers' "
           "training and the pairs they generated, each once; docs/results.md); empty: not trained by rfbench"),
    Column("train_wall_s", "number", "seconds that making the same entries took, summed (each as long as it took "
           "when it was made, on the machine that made it)"),
    Column("train_cost", "str", "the cache entries behind train_nfe, each with its forward+backward evaluations and "
           "seconds; or why train_nfe is empty"),
    Column("device", "str", "what the cell ran on", resume=True),
    Column("cpu_kernels", "str", "ATen's CPU kernels (torch.backends.cpu.get_cpu_capability(); ATEN_CPU_CAPABILITY "
                                 "chooses them): round-off differs between them"),
    Column("dtype", "str", "the samples' dtype"),
    Column("torch_version", "str", "library versions"),
    Column("numpy_version", "str", ""),
    Column("scipy_version", "str", ""),
    Column("rfbench_version", "str", ""),
    Column("python_version", "str", ""),
    Column("git_commit", "str", "the code's commit, and whether the tree had uncommitted changes"),
    Column("git_dirty", "bool", ""),
    Column("date", "str", "when the cell was written (UTC)"),
)
METRICS_AFTER = "ms_per_nfe"     # the metrics' columns follow this one

NAMES = tuple(c.name for c in SCHEMA)
# the parts of a cell key, in the schema's order (the first five also name its file): reordering the key columns
# above changes every key, and a resumed run then finds none of the cells stored before
KEY_FIELDS = tuple(c.name for c in SCHEMA if c.key)
DEFAULTS = {c.name: c.default for c in SCHEMA if c.default is not None}
RUN_IDENTITY = tuple(c.name for c in SCHEMA if c.gate == "run")
MODEL_IDENTITY = tuple(c.name for c in SCHEMA if c.gate == "model")
CELL = tuple(c.name for c in SCHEMA if c.gate == "cell")
RESUME_FIELDS = tuple(c.name for c in SCHEMA if c.resume)
INTEGER = tuple(c.name for c in SCHEMA if c.dtype == "int")


def table_columns(metric_columns: Sequence[str] = ()) -> tuple[str, ...]:
    """The leading columns of every table, in order: the schema's, with the metrics' columns after
    :data:`METRICS_AFTER`; any further record keys follow them."""
    at = NAMES.index(METRICS_AFTER) + 1
    metric_columns = tuple(c for c in metric_columns if c not in NAMES)
    return NAMES[:at] + metric_columns + NAMES[at:]


def record_steps(record) -> int | None:
    """A record's (or table row's) step count as an int, None for an adaptive solver or the independent row: a
    missing value, None or NaN (what a table's empty integer cell reads back as)."""
    try:
        return int(record.get("steps"))
    except (TypeError, ValueError):      # None, NaN, pandas' NA
        return None


def _empty(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def value_of(record, column: str):
    """A record's value of ``column``, its default where the record lacks it or left it empty."""
    value = record.get(column)
    return DEFAULTS.get(column) if _empty(value) else value


MODEL_NAME_RULE = ("a non-empty string of printable characters, without spaces around it, without '/' or '|', and not "
                   "'independent'")


def model_name_ok(name) -> bool:
    """Whether ``name`` may stand in the model column (a suite's model, a ``--model NAME``, an ``rfbench score
    --label``): :data:`MODEL_NAME_RULE`. '/' separates the parts of a cell (MODEL/SOLVER/STEPS), '|' and a line break
    would split a Markdown table's row, spaces around a name make it look like another, and 'independent' is the
    independent coupling's row."""
    return (isinstance(name, str) and bool(name) and name.isprintable() and name == name.strip()
            and "/" not in name and "|" not in name and name != "independent")


def at_default(record, column: str) -> bool:
    """Whether ``column`` has a default (:attr:`Column.default`) and the record holds it (or lacks the column)."""
    return column in DEFAULTS and str(value_of(record, column)) == DEFAULTS[column]
