"""Teacher registry on the command line.

    python -m teacher list          # every teacher: id, hub id, revision, family, vocabulary, format, engine, GPU memory
"""

from __future__ import annotations

import argparse
import json
import sys

from teacher.registry import TEACHERS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m teacher")
    ap.add_argument("command", choices=["list"])
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    args = ap.parse_args(argv)
    rows = [{"id": t.id, "hub_id": t.hub_id, "revision": t.revision, "source": t.source, "family": t.family,
             "vocab": t.vocab_size, "format": t.prompt_format, "engine": t.engine, "gpu_gib": t.gpu_memory_gib,
             "license": t.license} for t in TEACHERS.values()]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    head = f"{'id':<20} {'hub id':<36} {'rev':<6} {'family':<9} {'vocab':>7} {'format':<10} {'GPU GiB':>7}  engine"
    print(head)
    for r in rows:
        eng = ", ".join(f"{k}={v}" for k, v in r["engine"].items()) or "CPU, bf16"
        gpu = f"{r['gpu_gib']:.0f}" if r["gpu_gib"] else "-"
        print(f"{r['id']:<20} {r['hub_id']:<36} {r['revision']:<6} {r['family']:<9} {r['vocab']:>7} {r['format']:<10} {gpu:>7}  {eng}")
    return 0


if __name__ == "__main__":
    from distill.entry import guarded

    sys.exit(guarded(main, "python -m teacher")())
