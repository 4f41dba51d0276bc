"""rfbench's own baselines: a plugin like any other (loaded through the entry point ``rfbench.plugins``; rfbench
never imports this package).

Importing it registers its suites, each one self-contained: the problem, the cells, the metrics, the seeds and the
recipes of its models (:mod:`baselines.toy2d`, :mod:`baselines.images`, :mod:`baselines.cifar`,
:mod:`baselines.edm`). How each model family is built, trained and cached: :mod:`baselines.rectified_flow` (1-RF,
reflows, one-step distillation) and :mod:`baselines.ddpm`.
"""

from baselines import cifar, edm, images, toy2d  # noqa: F401  (register the suites)
