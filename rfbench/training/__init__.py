"""Training objectives: rectified flow (1-RF and reflow), one-step distillation, and the DDPM eps loss.

Time convention: t=0 is the source, t=1 is data, X_t = t*X1 + (1-t)*X0, and the flow target is X1 - X0.
"""

from rfbench.training.counting import counted
from rfbench.training.loops import (TrainConfig, ddpm_loss, distill_loss, fit, independent_pairs, paired_batches,
                                    rectified_flow_loss, seeded_init)

__all__ = ["TrainConfig", "fit", "rectified_flow_loss", "distill_loss", "ddpm_loss", "independent_pairs",
           "paired_batches", "seeded_init", "counted"]
