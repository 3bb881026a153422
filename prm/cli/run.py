"""``prm run``: train one method on one sequence and record the run into a new folder."""

from __future__ import annotations

import argparse
import datetime as _dt
from pathlib import Path

from prm.cli.common import check_method, check_out, check_sequence, path
from prm.cli.options import add_training_options, method_help, run_config, sequence_help
from prm.cli.recording import open_writer, record, restore_ctrl_c
from prm.data import sequence_for


def add_parser(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="train one method on one sequence and record the run")
    run.add_argument("--sequence", default="digits-mixed", help=f"[%(default)s] {sequence_help()}")
    run.add_argument("--method", default="prm", help=f"[%(default)s] {method_help()}")
    run.add_argument("--seed", type=int, default=0, help="[%(default)s]")
    run.add_argument("--out", type=path, default=None, help="run folder to create [runs/SEQUENCE-METHOD-sSEED-TIME]")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    add_training_options(run)
    run.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from prm.engine import train_sequence

    restore_ctrl_c()
    check_sequence(args.sequence)
    check_method(args.method)
    cfg = run_config(args, sequence=args.sequence, method=args.method, seed=args.seed)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out if args.out is not None else f"runs/{args.sequence}-{args.method}-s{args.seed}-{stamp}")
    check_out(out, "--out")
    seq = sequence_for(cfg)
    writer = open_writer(out, config=cfg)  # nothing is created on disk before this point
    return record(out, writer, tasks=len(seq.tasks), quiet=args.quiet,
                  train=lambda emit: train_sequence(cfg, emit=emit, sequence=seq, compile=args.compile))
