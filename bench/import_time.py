"""Import cost: ``import trainforge`` minus ``import torch`` (target: at most 0.5 s), median of 5."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time


def timed(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def main() -> None:
    torch_t = statistics.median(timed("import torch") for _ in range(5))
    ours_t = statistics.median(timed("import trainforge") for _ in range(5))
    print(f"import torch: {torch_t:.3f} s, import trainforge: {ours_t:.3f} s, "
          f"extra: {ours_t - torch_t:+.3f} s (target <= 0.5 s)")


if __name__ == "__main__":
    main()
