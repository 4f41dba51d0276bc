"""rfbench from a notebook (or another project's CI): a sweep as a pandas DataFrame, with nothing written to disk.

    python examples/notebook.py

The same rows, provenance, resume and regression gate as ``python benchmark.py`` (``out="runs/x"`` keeps the files,
``check="results/toy2d.csv"`` gates). Models trained by rfbench are cached ($RFBENCH_CACHE, else ~/.cache/rfbench):
the first run trains 1-RF, 2-RF and the distilled 2-RF of toy2d (about 2 minutes on 2 CPU cores), later runs only
sample.
"""

import pathlib

import torch

import rfbench

HERE = pathlib.Path(__file__).resolve().parent

# rfbench's models and a solver from a plugin file, at a few step counts, on 500 samples
frame = rfbench.run(suite="toy2d", models=["1-rf", "2-rf", "2-rf-distill"], solvers=["euler", "heun", "ab2"],
                    steps=[1, 2, 4, 8], num_samples=500, device="cpu", plugins=[str(HERE / "ab2_solver.py")])
ok = frame[frame["status"] == "ok"]
print(ok.pivot_table(index=["model", "solver"], columns="nfe", values="w2").round(3).to_string())


# a model object of your own beside them: anything callable as model(x, t); here the straight flow from N(0, I)
# that moves every point radially onto the circle of radius 4 where toy2d's eight modes sit
class Radial(torch.nn.Module):
    input_shape = (2,)

    def forward(self, x, t):
        t, r = t.reshape(-1, 1), x.norm(dim=1, keepdim=True).clamp_min(1e-6)
        r0 = (r - 4 * t) / (1 - t).clamp_min(1e-6)     # the radius the straight path through x started from
        return (4.0 - r0) * x / r


mine = rfbench.run(suite="toy2d", models={"radial": Radial(), "1-rf": None}, solvers=["euler"], steps=[1, 4],
                   num_samples=500, device="cpu")
print(mine[["model", "solver", "steps", "nfe", "w2", "transport_cost", "straightness"]].to_string(index=False))
