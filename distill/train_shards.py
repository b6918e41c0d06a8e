"""Train a student from any folder of teacher shards, without generating.

    fable-kd train --data DIR --config FILE [--teacher ID] [--objective kd|sft] [--name NAME] [--set k=v ...]

DIR holds the *.parquet shards this project writes (distill/schema.py): a run's
teachers/<id>/, or shards written on another machine. The student is the one the config
builds for the teacher (the first distilled one unless --teacher says), trained, checkpointed
and exported as the pipeline's train stage does it, into runs/<name>/students/<id>-<objective>/;
a killed command started again resumes from its last checkpoint. The folder is linked, never
copied, as the run's teachers/<id>.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from distill import artifacts
from distill.config import load, recorded
from distill.run_folder import RunFolder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fable-kd train", description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a folder of teacher shards (*.parquet)")
    ap.add_argument("--config", required=True, help="the run config that describes teacher and student")
    ap.add_argument("--teacher", help="the config's teacher the shards come from (default: its first distilled one)")
    ap.add_argument("--objective", choices=("kd", "sft"), help="default: the config's students (KD, and SFT beside it)")
    ap.add_argument("--name", help="the run folder's name (default: <config name>-train)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    args = ap.parse_args(argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args) -> int:
    from distill.train_stage import stage_train
    from distill.schema import holds_split
    from teacher.registry import check_reachable

    cfg = load(args.config, args.set)
    data = Path(args.data).expanduser().resolve()
    if not data.is_dir() or not any(data.glob("*.parquet")):
        raise FileNotFoundError(f"--data {args.data}: no teacher shards (*.parquet) in {data}")
    distilled = [tr for tr in cfg.teachers if cfg.objectives(tr)]
    if args.teacher:
        distilled = [tr for tr in cfg.teachers if tr.teacher == args.teacher]
        if not distilled:
            raise ValueError(f"--teacher {args.teacher}: not a teacher of {args.config} "
                             f"({', '.join(t.teacher for t in cfg.teachers)})")
    if not distilled:
        raise ValueError(f"{args.config} distils no teacher (every one has distil = false)")
    tr = distilled[0]
    if not any(holds_split(f, "train") for f in data.glob("*.parquet")):
        raise ValueError(f"--data {args.data}: the shards hold no training rows (split = 'train')")
    if tr.train.student_kind != "checkpoint":
        check_reachable(tr.model)  # a pruned or config student is built from the teacher's weights
    folder = RunFolder.named(args.name or f"{cfg.name}-train")
    folder.root.mkdir(parents=True, exist_ok=True)
    link = folder.teacher(tr.teacher)
    if link.is_symlink() or link.exists():
        if link.resolve() != data:
            raise ValueError(f"{folder.root} trains on {link.resolve()}, not {data}; pick another --name")
    else:
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(data, target_is_directory=True)
    artifacts.write_json_atomic(folder.config, recorded(cfg))
    ledger = artifacts.Ledger(folder.stages)
    for objective in [args.objective] if args.objective else cfg.objectives(tr):
        stage_train(cfg, tr, objective, folder, ledger)
        print(f"{objective}: {folder.student(tr.teacher, objective).path}")
    return 0


if __name__ == "__main__":
    from distill.entry import guarded

    sys.exit(guarded(main, "fable-kd train")())
