"""The `fable-kd` command: one entry point over each stage's own command line.

    fable-kd distill --config configs/default.toml     # the pipeline (python -m distill.pipeline)
    fable-kd generate --teacher smollm2-135m --out runs/x/teachers
    fable-kd train --data runs/x/teachers/smollm2-135m --config configs/tiny.toml
    fable-kd eval run --run runs/default               # the LLM judge (python -m eval.protocol)
    fable-kd compare --input a=runs/x/teachers/t --out runs/x/compare
    fable-kd serve --teacher smollm2-135m              # an OpenAI-compatible endpoint (Ray Serve LLM)
    fable-kd teachers list
    fable-kd bench                                     # make bench, from a source checkout

Each subcommand's module is imported only when it runs, so `fable-kd --help` loads no torch,
vLLM, Ray or transformers.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "distill": ("distill.pipeline", "distil the configured teachers into students (the whole pipeline)"),
    "generate": ("ray_cluster.generate", "teacher fables with top-k logprobs, as a Ray Data LLM job"),
    "train": ("distill.train_shards", "train a student from any folder of teacher shards"),
    "eval": ("eval.protocol", "judge a finished run, score fables, aggregate or compare verdicts"),
    "compare": ("eval.compare", "compare writers on toxicity, diversity and similarity"),
    "serve": ("ray_cluster.serve", "serve a teacher or student behind an OpenAI-compatible endpoint"),
    "teachers": ("teacher.__main__", "the teacher registry"),
    "bench": ("benchmarks.run", "measure speed and memory; writes BENCHMARKS.md"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: fable-kd COMMAND [ARGS...]   (fable-kd COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {about}" for name, (_, about) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n{usage()}", file=sys.stderr)
        return 2
    from distill.entry import guarded

    def command(args: list[str] | None) -> int:
        module = importlib.import_module(COMMANDS[name][0])
        if name == "bench":  # its parser reads sys.argv
            sys.argv = ["fable-kd bench", *rest]
            return module.main() or 0
        return module.main(args) or 0

    # Any error a command did not expect ends in one line (credentials masked) and a log file.
    return guarded(command, f"fable-kd {name}")(rest)


if __name__ == "__main__":
    sys.exit(main())
