"""Short runs of two contenders taken in turn, tagged with the memory bandwidth measured between
pairs: how tools/ab_builds.py (two builds) and tools/bench.py --phases (pyllm and llama.cpp) compare
speeds on a host whose bandwidth can halve for seconds at a time."""
import os
import subprocess
from typing import Callable, TypeVar

T = TypeVar("T")
HERE = os.path.dirname(os.path.abspath(__file__))


def membw_program(build_dir: str) -> str:
    """tools/membw.c, built into build_dir on first use."""
    exe = os.path.join(build_dir, "membw")
    if not os.path.exists(exe):
        subprocess.run(["gcc", "-O2", "-mavx2", "-fopenmp", os.path.join(HERE, "membw.c"), "-o", exe], check=True)
    return exe


def two_thread_bandwidth(membw: str) -> float:
    """GB/s that tools/membw.c reads on two threads right now."""
    out = subprocess.run([membw], check=True, capture_output=True, text=True).stdout
    return float(next(line for line in out.splitlines() if line.startswith("2 threads")).split()[2])


def take_turns(first: Callable[[], T], second: Callable[[], T], pairs: int, membw: str | None = None,
               on_pair: Callable[[int, T, T, float | None], None] | None = None) -> tuple[list[tuple[T, T]], list[float]]:
    """pairs of (first(), second()), run in ABBA order so neither always goes first; with membw, the
    bandwidth before the first pair and after each (pairs + 1 values). on_pair(i, a, b, bandwidth
    after) reports each pair as it comes."""
    bandwidth = [two_thread_bandwidth(membw)] if membw else []
    results = []
    for i in range(pairs):
        if i % 2 == 0:
            a = first()
            b = second()
        else:
            b = second()
            a = first()
        results.append((a, b))
        if membw:
            bandwidth.append(two_thread_bandwidth(membw))
        if on_pair:
            on_pair(i, a, b, bandwidth[-1] if membw else None)
    return results, bandwidth


def phases(bandwidth: list[float]) -> list[tuple[str, list[int]]]:
    """The pairs measured in each bandwidth phase, as (label, pair indices), if the bandwidth moved
    by more than 30% (else none): split halfway between the lowest and highest reading, a pair
    counting in a phase when the readings before and after it are both on that side."""
    if not bandwidth or max(bandwidth) <= 1.3 * min(bandwidth):
        return []
    cut = (max(bandwidth) + min(bandwidth)) / 2
    high = [i for i in range(len(bandwidth) - 1) if bandwidth[i] > cut and bandwidth[i + 1] > cut]
    low = [i for i in range(len(bandwidth) - 1) if bandwidth[i] <= cut and bandwidth[i + 1] <= cut]
    return [(label, idx) for label, idx in ((f"membw over {cut:.0f} GB/s before and after", high),
                                            (f"membw under {cut:.0f} GB/s before and after", low)) if idx]
