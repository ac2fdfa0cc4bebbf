"""An engine process on a CPU keeps freed tensor memory for the next layer (shared.engine.host_memory)."""

from __future__ import annotations

import platform
import resource

import pytest
import torch

from shared.engine.device import pick_device
from shared.engine.host_memory import keep_freed_memory


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_given_a_cpu_engine_process_when_a_large_tensor_is_freed_expect_its_pages_reused() -> None:
    # given the engine's CPU device picked (which applies the policy once per process)
    assert pick_device("cpu").type == "cpu"
    assert keep_freed_memory() is True
    n = 16 << 20  # bytes: a 32 x 512 x 512 bf16 activation

    def forward() -> int:  # three layers' activations alive at once, then all freed
        layers = [torch.empty(n, dtype=torch.uint8).fill_(i) for i in range(3)]
        return sum(int(t[-1]) for t in layers)

    for _ in range(6):  # the first forwards of a process settle the heap
        forward()
    # when the same allocations come and go again, as in every later forward
    before = _minor_faults()
    written = [forward() for _ in range(3)]
    faults = _minor_faults() - before
    # expect the freed pages reused (glibc's defaults trim the 48 MB freed at the heap's top
    # each time: 3 x 3 x n / 4 KiB = 36,864 faults)
    assert written == [3, 3, 3]
    assert faults < 1000, f"{faults} page faults: freed memory went back to the OS"
