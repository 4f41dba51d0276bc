"""Class labels from the seeds (rfbench.models.labels): a class-conditional EDM file sampled with each sample's class
drawn from its own seed, the same whatever the batch, at every place a run evaluates the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import rfbench
from rfbench import noise
from rfbench.cli_parsing import parse_model
from rfbench.data.images import ImageProblem
from rfbench.models.edm import EDMFlow
from rfbench.models.labels import SEEDS, seeded
from rfbench.models.sources import ModelFile
from rfbench.suites import Cell, Suite, SuiteModel
from rfbench.samplers.gits import search
from tests.standins import factory, registered
from tests.test_edm_pickle import CONDITIONAL, DATA, ROW_CLASSES, pickle_file

# seeds whose classes are ROW_CLASSES (1, the last, 0) for each fixture's label_dim: the rows of its pinned outputs
ROW_SEEDS = {"adm-cond-fp16": [2, 4, 5], "iddpm-ddpmpp-cond": [0, 4, 8]}


def test_classes_do_not_depend_on_the_batch_and_cover_the_classes():
    seeds = list(range(1000, 1600))
    whole = noise.classes(seeds, 10)
    parts = torch.cat([noise.classes(seeds[a:a + 7], 10) for a in range(0, len(seeds), 7)])
    assert whole.dtype == torch.int64 and torch.equal(whole, parts)
    assert torch.equal(noise.classes(seeds[::-1], 10), whole.flip(0))       # a seed's class, wherever it is
    counts = torch.bincount(whole, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 85        # 60 each in expectation (binomial sd 7.3)
    assert len(set(noise.classes(range(20), 1000).tolist())) >= 18          # seeds differ
    # its own stream: not the class a draw from the noise's generator would give
    assert not torch.equal(whole, torch.stack([torch.randint(10, (), generator=noise.generator_for(s))
                                                for s in seeds]))
    with pytest.raises(ValueError, match=r"^num_classes must be an integer >= 1, got 0$"):
        noise.classes([0], 0)


@pytest.mark.parametrize("name", sorted(CONDITIONAL))
def test_labels_from_the_seeds_equal_edm(tmp_path, name):
    """The rows of seeds whose classes are (1, last, 0) give EDM's own network output with those one-hot labels
    (tests/data/edm/outputs.pt, made with NVlabs/edm at 008a4e5)."""
    outputs = torch.load(DATA / "outputs.pt", weights_only=True)
    label_dim, seeds = CONDITIONAL[name], ROW_SEEDS[name]
    assert noise.classes(seeds, label_dim).tolist() == [c % label_dim for c in ROW_CLASSES]
    model = rfbench.load_model(pickle_file(tmp_path, name), device="cpu", class_label=SEEDS)
    assert model.classes_from_seeds == label_dim
    x, sigma, expected = outputs["x"], outputs["sigma"], outputs[f"{name}-labels"]
    t = 1 / (1 + sigma.double())
    with torch.no_grad():
        got = seeded(model, seeds).denoise(x.double() * t[:, None, None, None], t)
    assert (got - expected.double()).abs().max().item() <= 1e-5 * expected.abs().max().item()


def test_samples_do_not_depend_on_the_batch_and_are_refused_without_seeds(tmp_path):
    model = rfbench.load_model(pickle_file(tmp_path, "adm-cond-fp16"), device="cpu", class_label=SEEDS)
    fixed = rfbench.load_model(pickle_file(tmp_path, "adm-cond-fp16"), device="cpu", class_label=3)
    seeds = list(range(40, 46))
    x0 = noise.initial(seeds, (3, 8, 8))
    for solver in ("ipndm", "euler-ancestral"):
        whole = rfbench.sample(model, x0, solver, 3, grid="karras", seeds=seeds)
        parts = [rfbench.sample(model, x0[a:a + 2], solver, 3, grid="karras", seeds=seeds[a:a + 2]).x
                 for a in (4, 0, 2)]
        assert whole.nfe == 3      # per-sample computations, batched BLAS
        torch.testing.assert_close(torch.cat([parts[1], parts[2], parts[0]]), whole.x, rtol=1e-5, atol=1e-6)
    # the per-step noise may come from a noise= hook instead: the classes still come from the seeds
    hooked = rfbench.sample(model, x0, "euler-ancestral", 3, grid="karras", seeds=seeds,
                            noise=noise.StepNoise(seeds, (3, 8, 8)))
    assert torch.equal(hooked.x, rfbench.sample(model, x0, "euler-ancestral", 3, grid="karras", seeds=seeds).x)
    # the row of a seed of class 3 is what the fixed class 3 gives it
    row = int(noise.classes(seeds, 5).tolist().index(3))
    one = rfbench.sample(fixed, x0[row:row + 1], "ipndm", 3, grid="karras").x
    torch.testing.assert_close(rfbench.sample(model, x0, "ipndm", 3, grid="karras", seeds=seeds).x[row:row + 1], one)
    message = (r"^EDMFlow draws each sample's class \(of 5\) from its seed: evaluate it through "
               r"rfbench.sample\(..., seeds=...\) \(one seed per row of x0\), or bind it with "
               r"rfbench.models.labels.seeded\(model, seeds\)$")
    with pytest.raises(TypeError, match=message):
        rfbench.sample(model, x0, "ipndm", 3, grid="karras")
    with pytest.raises(TypeError, match=message):
        model(x0, torch.full((6,), 0.5))
    with pytest.raises(TypeError, match=message):       # the GITS search evaluates the model itself
        search(model, x0, 2, fine=4, teacher="euler")
    with pytest.raises(ValueError, match=r"^seeds has 2 entries but x0 has 6 rows: pass one seed per row$"):
        rfbench.sample(model, x0, "ipndm", 3, grid="karras", seeds=seeds[:2])
    with pytest.raises(ValueError, match=r"bound to 2 seeds but evaluated on 6 rows"):
        seeded(model, seeds[:2])(x0, torch.full((6,), 0.5))
    with pytest.raises(TypeError, match=r"^class_labels are taken only by a model whose classes come from the seeds"):
        fixed(x0, torch.full((6,), 0.5), class_labels=torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^class_label must be an integer in 0..4, 'seeds' \(each sample's class "
                                         r"from its seed\) or None \(unconditional\), got 'seed'$"):
        EDMFlow(model.net, "seed")
    with pytest.raises(ValueError, match=r"^class_label must be None: the network is unconditional"):
        rfbench.load_model(pickle_file(tmp_path, "edm-ddpmpp"), device="cpu", class_label=SEEDS)


def test_classes_from_the_command_line_and_in_a_suite_run(tmp_path):
    """``--model NAME:classes=PATH``: the mode is part of the model's identity and rows; a suite run in batches of
    4, timed twice (the second on fresh noise), gives each row its seed's class: its samples are
    rfbench.sample's on the seeds' rows."""
    path = pickle_file(tmp_path, "adm-cond-fp16")
    name, source = parse_model(f"cond:classes={path}")
    fixed, plain = parse_model(f"cond:class3={path}")[1], parse_model(f"cond={path}")[1]
    assert name == "cond" and source.class_label == SEEDS
    assert source.identity(None).id == plain.identity(None).id + ":classes=seeds" != fixed.identity(None).id
    assert source.identity(None).checkpoint.endswith(", classes from the seeds)")
    source.check()
    with pytest.raises(ValueError, match=r"^--model cond:class=.*KIND must be one of .*classN \(a class-conditional "
                                         r"EDM file sampled with class N\) or classes \(each sample's class from its "
                                         r"seed\), got 'class'$"):
        parse_model(f"cond:class={path}")
    with pytest.raises(ValueError, match=r"^class_label must be an integer >= 0, 'seeds'"):
        ModelFile(path, class_label="all")

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(data / f"{i}.png")
    cells = (Cell("cond", "ipndm", 3, grid="karras"), Cell("cond", "euler-ancestral", 3, grid="karras"))
    suite = Suite(name="labels-test", version=1, description="class labels from the seeds",
                  problem=ImageProblem("folder", (3, 8, 8), data_dir=str(data)),
                  models=(SuiteModel("cond", source),), cells=cells, metrics=("transport_cost",),
                  quality_metric="transport_cost", num_samples=6, first_seed=10, batch_size=4, repeats=2)
    with registered(suite):
        frame = rfbench.run("labels-test", out=tmp_path / "out", device="cpu", save_samples=True, plots=False)
    rows = frame[frame["solver"].isin(["ipndm", "euler-ancestral"])]
    assert len(rows) == 2 and (rows["status"] == "ok").all(), rows[["solver", "status", "error"]]
    assert rows["model_id"].str.endswith(":classes=seeds").all()
    assert rows["model_checkpoint"].str.endswith(", classes from the seeds)").all()
    model = rfbench.load_model(path, device="cpu", class_label=SEEDS)
    plain_model = rfbench.load_model(path, device="cpu")
    seeds = list(range(10, 16))
    x0 = noise.initial(seeds, (3, 8, 8))
    for _, row in rows.iterrows():
        stored = np.load(next((tmp_path / "out").rglob(f"*{row['solver']}*.npz")))
        expected = torch.cat([rfbench.sample(model, x0[a:b], row["solver"], int(row["steps"]), grid="karras",
                                             seeds=seeds[a:b]).x for a, b in ((0, 4), (4, 6))])    # the run's batches
        assert stored["seeds"].tolist() == seeds
        np.testing.assert_array_equal(stored["arr_0"], expected.numpy())
        unconditional = rfbench.sample(plain_model, x0[:4], row["solver"], int(row["steps"]), grid="karras",
                                       **({"seeds": seeds[:4]} if row["solver"] == "euler-ancestral" else {})).x
        assert (unconditional - expected[:4]).abs().max() > 1e-3        # the classes changed the samples


class SeedClassFlow(torch.nn.Module):
    """A flow whose velocity is its row's class, v(x, t) = class: every solver's sample is x0 + class, exactly."""

    classes_from_seeds = 4

    def forward(self, x, t, class_labels=None):
        if class_labels is None:
            raise TypeError("SeedClassFlow evaluated without class labels")
        return torch.ones_like(x) * class_labels.to(x.dtype).reshape(-1, *[1] * (x.ndim - 1))


def test_every_evaluation_of_a_suite_run_gets_the_seeds_classes(tmp_path):
    """Sampling in batches, the warm-up, the timed repeat on fresh noise, the GITS search, straightness's trajectories
    and solver_error's reference solve (5 rows in batches of 4) all evaluate the model with their rows' classes: any
    of them without would fail (the model refuses), and solver_error (the uniform cell against the reference solve)
    is 0 only where both used the same classes."""
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(data / f"{i}.png")
    cells = (Cell("seeded", "euler", 2), Cell("seeded", "euler", 2, grid="gits:fine=4"),
             Cell("seeded", "euler-ancestral", 2, grid="karras"))
    suite = Suite(name="labels-sites", version=1, description="classes from the seeds at every evaluation",
                  problem=ImageProblem("folder", (3, 8, 8), data_dir=str(data)),
                  models=(SuiteModel("seeded", factory(SeedClassFlow())),), cells=cells,
                  metrics=("transport_cost", "straightness", "solver_error"), quality_metric="transport_cost",
                  num_samples=6, first_seed=20, batch_size=4, repeats=2, straightness_steps=4,
                  solver_error_samples=5)
    with registered(suite):
        frame = rfbench.run("labels-sites", out=tmp_path / "out", device="cpu", save_samples=True, plots=False)
    rows = frame[frame["model"] == "seeded"].set_index("grid")
    assert (rows["status"] == "ok").all(), rows[["solver", "status", "error"]]
    assert rows["straightness"].notna().all() and rows["grid_times"].notna().any()
    assert rows.loc["uniform", "solver_error"] < 1e-5 and rows.loc["gits:fine=4", "grid_times"].startswith("0.01")
    seeds = list(range(20, 26))
    expected = noise.initial(seeds, (3, 8, 8)) + noise.classes(seeds, 4).float().reshape(-1, 1, 1, 1)
    arrays = [np.load(path)["arr_0"] for path in (tmp_path / "out").rglob("*_seeded_euler_2-*.npz")]
    t0 = float(rows.loc["gits:fine=4", "grid_times"].split(",")[0])
    assert len(arrays) == 2
    for scale in (1.0, 1 - t0):      # the gits grid starts at t0 > 0, from the state (1 - t0) x0
        assert any(np.allclose(a, scale * expected.numpy(), rtol=0, atol=1e-5) for a in arrays)
