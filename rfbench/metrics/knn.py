"""Improved precision and recall (Kynkaanniemi et al. 2019): k-nearest-neighbour manifolds, exact, fast, lean.

Written here rather than taken from prdc (NAVER's reference) because prdc holds three N x N distance matrices (and
sklearn upcasts each chunk of them to float64): 0.9 GB at 6,000 x 6,000 and 30 GB at CIFAR-10's 50,000. This module
computes the squared distances in row blocks of bounded size as float32 matrix products, and decides every comparison
that float32 rounding could flip again in float64 from the features themselves:

- a float32 product ``d~ = |x|^2 + |y|^2 - 2 x.y`` is within ``tol = c_D (|x|^2 + |y|^2)`` of the exact squared distance
  (``c_D`` from the standard bound ``gamma_D = D u / (1 - D u)`` on a D-term dot product, ``u = 2^-24``, widened for
  the additions and, when the features are not float32, for their rounding to float32; then doubled);
- k-NN radius of a row: its k+1 smallest ``d~`` (itself included) fix a cut ``r~ + 2 tol`` that every one of its k+1
  exact nearest rows lies under; those candidates (typically k+1 to a few more) are measured exactly in float64;
- coverage: ``d~ <= r - tol`` is inside for certain, ``d~ > r + tol`` outside for certain; the pairs between are
  measured exactly.

So the answer is the one exact float64 arithmetic gives (``d <= r``, the paper's comparison; prdc uses ``<`` on
float32-rounded distances, which differs only on exact ties). tests/test_benchmarks.py times it against prdc and checks
that both give the same numbers; tests/test_image_metrics.py checks it against the full float64 distance matrix.

Under several processes (``world``: :class:`rfbench.distributed.World`), every process holds both feature sets and
takes one contiguous block of rows of each product; the radii are gathered and the coverages reduced, so every process
ends with the numbers one process computes.
"""

from __future__ import annotations

import contextlib
import math

import torch

U32 = 2.0 ** -24            # unit roundoff of float32
SYMMETRIC_SIDE = {False: 1024, True: 8192}   # rows per square block of a set's own distances: CPU, CUDA
PAIR_BYTES = 4 * 2 ** 20    # float64 memory for the exact re-check of candidate pairs, per chunk and operand


def error_coefficient(dim: int, float32_input: bool) -> float:
    """c such that a float32-computed squared distance is within c (|x|^2 + |y|^2) of the exact one (see module doc):
    ``gamma_D`` for the dot product (times 2: -2 x.y; |x.y| <= (|x|^2 + |y|^2) / 2), 8u for the norms and the two
    additions (3u suffice), 4u more when the inputs were rounded to float32."""
    m = dim * U32
    gamma = m / (1 - m)
    return gamma + 8 * U32 + (0 if float32_input else 4 * U32)


@contextlib.contextmanager
def full_float32_products():
    """float32 matrix products in full float32 (no TF32 or bf16 reduced-precision modes that a sampling run may
    have switched on): the error bound above assumes it."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


class Features:
    """One feature set, as the k-NN passes use it: float32 rows for the products, their squared norms, and the
    original values for exact re-checks (the float32 rows themselves when the input was float32: no copy)."""

    def __init__(self, x: torch.Tensor, device: torch.device):
        self.exact = x                                     # any float dtype, on the CPU or ``device``
        self.f32 = x.to(device=device, dtype=torch.float32)
        self.is_f32 = x.dtype == torch.float32
        self.sq = _blocked_sq_norms(x, device)
        self.sq32 = self.sq.float()

    @property
    def n(self) -> int:
        return self.f32.shape[0]

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """Rows by index, in float64, on the product device."""
        return self.exact[index.to(self.exact.device)].to(device=self.f32.device, dtype=torch.float64)


def _blocked_sq_norms(x: torch.Tensor, device: torch.device, rows: int = 256) -> torch.Tensor:
    """Exact squared norms (float64) without a float64 copy of the whole set."""
    return torch.cat([x[i:i + rows].to(device=device, dtype=torch.float64).square().sum(1)
                      for i in range(0, x.shape[0], rows)])


def _coef(a: Features, b: Features) -> float:
    return error_coefficient(a.f32.shape[1], a.is_f32 and b.is_f32)


def _block(a: Features, rows, b: Features) -> torch.Tensor:
    """float32 squared distances, rows ``rows`` (a slice or an index tensor) of ``a`` x all rows of ``b``."""
    d = torch.mm(a.f32[rows], b.f32.T)
    return d.mul_(-2).add_(b.sq32.unsqueeze(0)).add_(a.sq32[rows].unsqueeze(1))


def _exact_pairs(a: Features, rows: torch.Tensor, b: Features, cols: torch.Tensor) -> torch.Tensor:
    """Exact (float64) squared distances of the pairs (a[rows[p]], b[cols[p]]), in chunks of bounded memory."""
    chunk = max(1, PAIR_BYTES // (8 * a.f32.shape[1]))
    out = [a.rows(rows[i:i + chunk]).sub_(b.rows(cols[i:i + chunk])).square_().sum(1)
           for i in range(0, len(rows), chunk)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64, device=a.f32.device)


def block_rows(n_cols: int, max_bytes: int) -> int:
    """Rows per block so that a block of float32 distances (plus its comparison masks) stays within ``max_bytes``."""
    return max(1, min(n_cols, max_bytes // (6 * max(n_cols, 1))))


class Radii:
    """Squared k-NN radii of every row of a set, each known to within ``tol`` (float64 tensors), with the exact
    value computed only for the rows whose comparisons need it (``exact_at``). Exact radii given up front: tol 0."""

    def __init__(self, x: Features, k: int, value: torch.Tensor, tol: torch.Tensor, max_bytes: int):
        self.x, self.k, self.value, self.tol, self.max_bytes = x, k, value, tol, max_bytes
        self.known = tol == 0

    def exact_at(self, index: torch.Tensor) -> torch.Tensor:
        missing = torch.unique(index[~self.known[index]])
        if len(missing):
            self.value[missing] = exact_radii(self.x, self.k, missing, self.max_bytes)
            self.tol[missing] = 0
            self.known[missing] = True
        return self.value[index]


def _smallest(values: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    return torch.topk(values, min(k, values.shape[dim]), dim=dim, largest=False).values


def approx_radii(x: Features, k: int, max_bytes: int, world=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every row's k-th smallest float32 squared distance to a row of ``x`` (the row itself at position 0) and its
    error bound: each distance is within ``tol_ij <= c (|x_i|^2 + max |x|^2)``, so the k-th smallest of them is
    within the same of the exact k-th smallest.

    The distance matrix is symmetric: only the blocks on and above the diagonal are computed (each off-diagonal
    block serves its rows and, transposed, its columns), which is 0.5-0.6 of the products of the full matrix; the
    k+1 smallest per row are merged over the blocks. Under several processes the blocks are dealt out in turn and
    the per-row k+1 smallest merged over the processes."""
    # square blocks of 1,024 rows on the CPU (0.57 s at 6,000 x 2,048 against 0.82 s at 2,600 and 0.94 s for the
    # full matrix, 2 cores), larger on a GPU
    size = max(k + 1, min(SYMMETRIC_SIDE[x.f32.device.type == "cuda"], int(math.sqrt(max_bytes / 6))))
    edges = list(range(0, x.n, size)) + [x.n]
    blocks = [(i, j) for i in range(len(edges) - 1) for j in range(i, len(edges) - 1)]
    if world is not None and world.active:
        blocks = blocks[world.rank::world.size]

    def local() -> torch.Tensor:
        table = torch.full((x.n, k + 1), float("inf"), dtype=torch.float32, device=x.f32.device)
        for i, j in blocks:
            rows, cols = slice(edges[i], edges[i + 1]), slice(edges[j], edges[j + 1])
            d = torch.mm(x.f32[rows], x.f32[cols].T).mul_(-2).add_(x.sq32[cols].unsqueeze(0)).add_(
                x.sq32[rows].unsqueeze(1))
            table[rows] = _smallest(torch.cat([table[rows], _smallest(d, k + 1, 1)], 1), k + 1, 1)
            if i != j:
                table[cols] = _smallest(torch.cat([table[cols], _smallest(d, k + 1, 0).T], 1), k + 1, 1)
            del d
        return table

    parts = _everyone(world, local)
    table = _smallest(torch.cat([p.to(x.f32.device) for p in parts], 1), k + 1, 1) if len(parts) > 1 else parts[0]
    value = table[:, k].double()
    return value, _coef(x, x) * (x.sq + float(x.sq.max())) + 2 * U32 * value.abs()


def exact_radii(x: Features, k: int, index: torch.Tensor, max_bytes: int) -> torch.Tensor:
    """Exact squared distance (float64) from rows ``index`` of ``x`` to their k-th nearest other row: the float32
    distances give a cut (the k-th smallest plus twice the error bound) under which all of the k+1 exact nearest
    rows lie; those candidates are measured exactly."""
    out = []
    coef, top = _coef(x, x), float(x.sq.max())
    step = block_rows(x.n, max_bytes)
    for s in range(0, len(index), step):
        idx = index[s:s + step]
        d = _block(x, idx, x)
        cut = torch.topk(d, k + 1, dim=1, largest=False).values[:, k].double()
        cut += 2 * coef * (x.sq[idx] + top) + 4 * U32 * cut.abs()
        rows, cols = (d <= cut.float().unsqueeze(1)).nonzero(as_tuple=True)
        del d
        exact = _exact_pairs(x, idx[rows], x, cols)
        counts = torch.bincount(rows, minlength=len(idx))
        pos = torch.arange(len(rows), device=rows.device) - (torch.cumsum(counts, 0) - counts)[rows]
        table = torch.full((len(idx), int(counts.max())), float("inf"), dtype=torch.float64, device=rows.device)
        table[rows, pos] = exact
        out.append(torch.kthvalue(table, k + 1, dim=1).values)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64, device=x.f32.device)


def _inside(d: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Along ``dim`` of the float32 distances: sure (some d <= lo) and undecided (no sure one, some d <= hi); the
    thresholds broadcast against ``d``."""
    sure = (d <= lo).any(dim)
    return sure, (d <= hi).any(dim) & ~sure


def _thresholds(r: Radii, index, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 thresholds below which a float32 distance is surely within radius ``r`` and above which it surely is
    not: the radius's own uncertainty, the distance's ``tol`` and the rounding of the threshold to float32."""
    value, width = r.value[index], r.tol[index] + tol
    return ((value - width - 2 * U32 * value.abs()).float(), (value + width + 2 * U32 * value.abs()).float())


def coverage_rows(fake: Features, real: Features, r_fake: Radii, r_real: Radii, start: int, stop: int,
                  max_bytes: int) -> tuple[int, torch.Tensor]:
    """For fake rows start:stop: how many lie inside the real manifold (within the radius of some real row), and which
    real rows lie inside the fake manifold of these fake rows (a boolean per real row). A comparison that the float32
    distance and the radii's bounds leave open is decided by the exact distance and the exact radius."""
    coef = _coef(fake, real)
    tol_real = coef * float(real.sq.max())
    fake_inside = 0
    real_inside = torch.zeros(real.n, dtype=torch.bool, device=real.f32.device)
    step = block_rows(real.n, max_bytes)
    for s in range(start, stop, step):
        e = min(stop, s + step)
        d = _block(fake, slice(s, e), real)
        tol = float(coef * fake.sq[s:e].max()) + tol_real
        # precision: fake row i is inside when d_ij <= r_real_j for some real row j
        lo, hi = _thresholds(r_real, slice(None), tol)
        sure, open_rows = _inside(d, lo.unsqueeze(0), hi.unsqueeze(0), 1)
        open_rows = open_rows.nonzero(as_tuple=True)[0]
        if len(open_rows):
            sub = d[open_rows]
            i, j = ((sub > lo.unsqueeze(0)) & (sub <= hi.unsqueeze(0))).nonzero(as_tuple=True)
            rows = open_rows[i]
            inside = _exact_pairs(fake, rows + s, real, j) <= r_real.exact_at(j)
            sure[rows[inside]] = True
        fake_inside += int(sure.sum())
        # recall: real row j is inside when d_ij <= r_fake_i for some fake row i
        lo, hi = _thresholds(r_fake, slice(s, e), tol)
        sure, open_cols = _inside(d, lo.unsqueeze(1), hi.unsqueeze(1), 0)
        real_inside |= sure
        open_cols = (open_cols & ~real_inside).nonzero(as_tuple=True)[0]
        if len(open_cols):
            sub = d[:, open_cols]
            i, j = ((sub > lo.unsqueeze(1)) & (sub <= hi.unsqueeze(1))).nonzero(as_tuple=True)
            cols = open_cols[j]
            inside = _exact_pairs(fake, i + s, real, cols) <= r_fake.exact_at(i + s)
            real_inside[cols[inside]] = True
        del d
    return fake_inside, real_inside


def share(n: int, world) -> tuple[int, int]:
    """This process's contiguous block of ``n`` rows (all of them for a single process)."""
    if world is None or not world.active:
        return 0, n
    return n * world.rank // world.size, n * (world.rank + 1) // world.size


class PeerError(RuntimeError):
    """A process of a torchrun failed in the shared k-NN work: raised on every process, naming the ranks and why."""


def _everyone(world, compute) -> list:
    """``compute()`` on this process, and the results of every process (tensors moved to the CPU), in rank order, on
    all of them. An error on any process is raised on every one (:class:`PeerError`), so that none waits in a
    collective for a process that stopped. A single process: ``[compute()]``."""
    if world is None or not world.active:
        return [compute()]
    try:
        local = compute()
        local, error = (tuple(t.cpu() for t in local) if isinstance(local, tuple) else local.cpu()), None
    except Exception as exc:
        local, error = None, f"{type(exc).__name__}: {exc}"
    parts = world.all_objects((local, error))
    errors = [f"rank {rank}: {e}" for rank, (_, e) in enumerate(parts) if e is not None]
    if errors:
        raise PeerError("precision/recall's shared k-NN work failed: " + "; ".join(errors))
    return [part for part, _ in parts]


def knn_radii_exact(x: Features, k: int, max_bytes: int, world=None) -> torch.Tensor:
    """Every row's exact squared k-NN radius; under several processes each computes its block and all get all."""
    start, stop = share(x.n, world)
    parts = _everyone(world, lambda: exact_radii(x, k, torch.arange(start, stop, device=x.f32.device), max_bytes))
    return torch.cat([p.to(x.f32.device) for p in parts])


def radii(x: Features, k: int, max_bytes: int, world=None, exact: torch.Tensor | None = None) -> Radii:
    """Every row's k-NN radius to within its bound (exact when given), shared by all processes."""
    if exact is not None:
        value = exact.to(device=x.f32.device, dtype=torch.float64).clone()
        return Radii(x, k, value, torch.zeros_like(value), max_bytes)
    return Radii(x, k, *approx_radii(x, k, max_bytes, world), max_bytes)


def coverages(fake: Features, real: Features, r_fake: Radii, r_real: Radii, max_bytes: int,
              world=None) -> tuple[float, float]:
    """(precision, recall); under several processes each takes a block of fake rows and all get the totals."""
    start, stop = share(fake.n, world)
    parts = _everyone(world, lambda: _coverage_tensors(fake, real, r_fake, r_real, start, stop, max_bytes))
    inside = sum(int(p[0]) for p in parts)
    real_inside = torch.stack([p[1].cpu() for p in parts]).any(0)
    return inside / fake.n, int(real_inside.sum()) / real.n


def _coverage_tensors(*args) -> tuple[torch.Tensor, torch.Tensor]:
    inside, real_inside = coverage_rows(*args)
    return torch.tensor(inside), real_inside
