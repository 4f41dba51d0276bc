"""rfbench: a benchmark harness for fast samplers of rectified-flow and diffusion models.

Time convention, used everywhere: t=0 is the source (noise), t=1 is data, ``X_t = t*X1 + (1-t)*X0``, and a flow
model is a callable ``v(x, t)``.
"""

from rfbench.models import DiffusionModel
from rfbench.noise import initial
from rfbench.samplers import SOLVERS, NonFiniteError, SampleResult, SamplerError, Trajectory, sample

__version__ = "0.1.0"

__all__ = ["sample", "SOLVERS", "SampleResult", "Trajectory", "SamplerError", "NonFiniteError", "DiffusionModel",
           "initial", "__version__"]
