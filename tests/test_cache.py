"""The model cache on a disk without room: refused before training when the network cannot fit, and a disk that
fills up while an entry is written (torch says only "unexpected pos") is said as "no space left on device" naming
the cache file."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from rfbench.models.cache import Cache, CacheFullError

ROOT = Path(__file__).resolve().parents[1]


def test_a_cache_without_room_for_a_network_is_refused_before_training(tmp_path):
    def make():      # 10^13 weights on the meta device: 40 TB on disk, no memory taken
        return torch.nn.Linear(10**6, 10**7, device="meta")

    def train():
        raise AssertionError("trained although the cache has no room for the result")

    cache = Cache(tmp_path / "cache", log=lambda msg: None)
    path = cache.network_path("huge", {"width": 10**7})
    with pytest.raises(CacheFullError) as caught:
        cache.network("huge", {"width": 10**7}, make, train, "cpu")
    message = str(caught.value)
    assert message.startswith(f"cannot train huge: no space left on device for the cache file {path} (about 44.0 TB, "
                              f"its disk has ")
    assert message.endswith("free); free space or give another cache folder (--cache, cache_dir=), then rerun")
    assert "\n" not in message and not path.exists()


# run in a mount namespace with a 4 MiB tmpfs at sys.argv[1] as the cache: a pair set too large for it, and a
# network whose training fills the disk (as another job writing there would) before it is stored
ON_A_FULL_DISK = textwrap.dedent("""
    import sys
    from pathlib import Path

    import torch

    from rfbench.models.cache import Cache, CacheFullError

    cache = Cache(sys.argv[1], log=lambda msg: None)
    try:
        cache.tensors("pairs", {"n": 1}, lambda: {"z0": torch.zeros(2 * 10**6)})
    except CacheFullError as exc:
        print(exc)

    def train():
        Path(sys.argv[1], "filler").write_bytes(bytes(3_900_000))
        return torch.nn.Linear(400, 400), {}
    try:
        cache.network("net", {"n": 2}, lambda: torch.nn.Linear(400, 400), train, "cpu")
    except CacheFullError as exc:
        print(exc)
    print(sorted(p.name for p in Path(sys.argv[1]).rglob("*") if p.is_file() and p.suffix != ".lock"))
""")


def test_a_disk_that_fills_up_is_said_as_no_space_left_naming_the_cache_file(tmp_path):
    """A real full disk: a 4 MiB tmpfs mounted in a user and mount namespace (``unshare -rm``, no root needed where
    the kernel allows unprivileged namespaces; skipped elsewhere)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("unshare") is None:
        pytest.skip("no unshare command to mount a small tmpfs")
    mounted = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=4m none {disk}"],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {mounted.stderr.strip()}")
    script = tmp_path / "full_disk.py"
    script.write_text(ON_A_FULL_DISK)
    done = subprocess.run(["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=4m none "$1" && exec "$2" "$3" "$1"',
                           "sh", str(disk), sys.executable, str(script)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    pairs, net, files = done.stdout.strip().splitlines()
    cache = Cache(disk)
    assert pairs.startswith(f"made pairs, but could not store it: no space left on device for the cache file "
                            f"{cache.tensors_path('pairs', {'n': 1})} (about 9.8 MB, its disk has ")
    assert net.startswith(f"trained net, but could not store it: no space left on device for the cache file "
                          f"{cache.network_path('net', {'n': 2})} (about ")
    assert files == "['filler']"        # no half-written entry left behind
