"""rfbench: a benchmark harness for fast samplers of rectified-flow and diffusion models.

Time convention, used everywhere: t=0 is the source (noise), t=1 is data, ``X_t = t*X1 + (1-t)*X0``, and a flow
model is a callable ``v(x, t)``.

The public names: :func:`sample` (one sampler call, NFE counted), :func:`initial` (seeded x0), :func:`run` (a sweep
as a DataFrame), :func:`load_model` (the sampler-ready model in a file of any format rfbench reads), and the doors
through which a user's solver, time grid, model, metric, dataset, extractor or suite enters the same tables as
rfbench's own: :func:`register_solver`, :func:`register_grid`, :func:`register_model`,
:func:`register_metric`, :func:`register_dataset`, :func:`register_extractor`, :func:`register_suite` and
:func:`load_plugin`.
"""

from rfbench.api import GateFailed, InputError, run
from rfbench.data.registry import Dataset, register_dataset
from rfbench.metrics import Metric, MetricInput, register_metric
from rfbench.metrics.features import FeatureExtractor, register_extractor
from rfbench.models.diffusion import DiffusionModel
from rfbench.models.formats import load_model
from rfbench.models.sources import Factory, ModelFile, ModelSource, Recipe, register_model
from rfbench.noise import initial
from rfbench.plugins import PluginError, load_plugin
from rfbench.samplers import (GRIDS, SOLVERS, BudgetExceeded, NonFiniteError, SampleResult, SamplerError, Trajectory,
                              register_grid, register_solver, sample)
from rfbench.suites import Cell, Suite, SuiteModel, register_suite
from rfbench.version import __version__

__all__ = ["sample", "initial", "run", "load_model", "SOLVERS", "GRIDS", "SampleResult", "Trajectory", "SamplerError",
           "NonFiniteError", "BudgetExceeded", "DiffusionModel", "register_solver", "register_grid", "register_model",
           "register_metric",
           "register_dataset", "register_extractor", "register_suite", "load_plugin", "PluginError", "InputError",
           "GateFailed", "Metric", "MetricInput", "FeatureExtractor", "Dataset", "ModelSource", "Recipe", "ModelFile",
           "Factory", "Suite", "SuiteModel", "Cell", "__version__"]
