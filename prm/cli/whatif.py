"""``prm whatif RUN --task T --similar ...``: re-run a recorded run from one task with DTD's
decision there replaced (docs/whatif.md); the child is a run folder of its own."""

from __future__ import annotations

import argparse
from pathlib import Path

from prm import methods
from prm.cli.common import check_out, fail, path, say
from prm.cli.options import device_problem
from prm.cli.recording import open_writer, record, restore_ctrl_c


def _task_list(text: str) -> list[int]:
    """``--similar``: 1-based task numbers, comma-separated; "" or "none" for none."""
    if text.strip().lower() in ("", "none"):
        return []
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected task numbers such as 1,3 (or none), got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"task numbers start at 1, got {text!r}")
    return values


def add_parser(sub: argparse._SubParsersAction) -> None:
    what = sub.add_parser("whatif", help="re-run a recorded run from one task with DTD's decision replaced")
    what.add_argument("run", type=path, help="the parent run folder (recorded with checkpoints by a method with DTD: "
                      f"{', '.join(methods.with_dtd())})")
    what.add_argument("--task", type=int, required=True, help="the task (1-based, 2 or more) whose decision is replaced")
    what.add_argument("--similar", type=_task_list, required=True,
                      help="earlier tasks (1-based, comma-separated) to call similar in every masked layer; "
                           "every other earlier task is dissimilar; \"\" or none: all dissimilar")
    what.add_argument("--out", type=path, required=True, help="the child run folder to create")
    what.add_argument("--quiet", action="store_true", help="no progress bar")
    what.set_defaults(func=cmd_whatif)


def cmd_whatif(args: argparse.Namespace) -> int:
    from prm import whatif
    from prm.engine import train_sequence

    restore_ctrl_c()
    out = Path(args.out)
    check_out(out, "--out")
    try:
        plan = whatif.plan(args.run, task=args.task - 1, similar=[t - 1 for t in args.similar])
        seq = whatif.sequence(plan)
    except whatif.WhatIfError as exc:
        fail(str(exc))
    problem = device_problem(plan.config.device)
    if problem:  # the child replays its parent on the parent's device (prm.whatif), or not at all
        fail(f"{args.run} was recorded on {plan.config.device}, and {problem}; a what-if replays its parent "
             "on the parent's device (docs/whatif.md): ask it on a machine that has one")
    writer = open_writer(out, config=plan.config, parent=plan.link())
    similar = ", ".join(f"T{i + 1}" for i in plan.link().similar(0)) or "none"
    say(f"what-if of {args.run} from task {args.task}: similar {similar}, every other earlier task dissimilar",
        err=True)
    return record(out, writer, tasks=len(seq.tasks), quiet=args.quiet,
                  train=lambda emit: train_sequence(plan.config, emit=whatif.replaying(plan, emit), sequence=seq,
                                                    resume=plan.resume(), compile=plan.compile))
