"""Speed and memory measurements behind `make bench`."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository (BENCHMARKS.md, configs/, ../shared)
