"""``prm tune``: an Optuna TPE study of one method's hyper-parameters on one sequence
(docs/tuning.md); prints the best trial and PS. Also the storage and the recorded trial run
that ``compare --study`` and ``compare --tuned`` share with it."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prm.cli.common import (check_method, check_out, check_sequence, fail, fmt, params_text, path, say, shown,
                            study_name)
from prm.cli.options import add_training_options, method_help, run_config, sequence_help
from prm.config import RunConfig
from prm.data import sequence_for


def add_parser(sub: argparse._SubParsersAction) -> None:
    tun = sub.add_parser("tune", help="Optuna TPE study of one method's hyper-parameters; prints the best and PS")
    tun.add_argument("--sequence", default="digits-mixed-few", help=f"[%(default)s] {sequence_help()}")
    tun.add_argument("--method", default="prm", help=f"[%(default)s] {method_help()}")
    tun.add_argument("--trials", type=int, default=20,
                     help="complete trials the study should hold, counting earlier commands and other workers "
                          "[%(default)s]")
    tun.add_argument("--seed", type=int, default=0, help="the runs' seed and the sampler's [%(default)s]")
    tun.add_argument("--storage", type=path, default=None,
                     help="Optuna storage: sqlite:///file.db, journal:///file.log (a shared folder) or "
                          "postgresql://user@host/db [sqlite:///runs/optuna.db]")
    tun.add_argument("--study", type=study_name, default=None,
                     help="study name, also the folder of its trials under --runs-dir [tune-SEQUENCE-METHOD]")
    tun.add_argument("--runs-dir", type=path, default="runs/tune", help="trial run folders go to RUNS_DIR/STUDY/trial-NNNN "
                                                                        "[%(default)s]")
    tun.add_argument("--fail-running", action="store_true",
                     help="first mark the study's running trials failed (after a worker was killed on a journal "
                          "storage, which keeps no heartbeat; only when no other worker is running)")
    tun.add_argument("--quiet", action="store_true", help="no progress bar")
    add_training_options(tun)
    tun.set_defaults(func=cmd_tune)


def storage(args: argparse.Namespace) -> str:
    """The Optuna storage of ``--storage``, or prm.tune's default one."""
    from prm import tune

    return args.storage or tune.DEFAULT_STORAGE


def train_recorded(config: RunConfig, run_dir: Path, *, compile: str, sequence: Any,
                   emit: Callable[[Any], None] | None = None) -> Any:
    """One trial's run, recorded into ``run_dir`` (summary and projections written at its end)."""
    from prm.engine import train_sequence
    from prm.run import RunWriter

    writer = RunWriter(run_dir, config=config)

    def both(event: Any) -> None:
        writer(event)
        if emit:
            emit(event)

    return train_sequence(config, emit=both, sequence=sequence, compile=compile)


def cmd_tune(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from prm import tune

    check_sequence(args.sequence)
    check_method(args.method)
    if args.trials < 1:
        fail(f"--trials must be >= 1, got {args.trials}")
    cfg = run_config(args, sequence=args.sequence, method=args.method, seed=args.seed)
    # trials keep PCA only and no checkpoints: 20 trials would otherwise hold 20 what-if
    # checkpoint sets; the explorer computes UMAP when a trial's run is opened
    cfg = cfg.replace(record=dataclasses.replace(cfg.record, projections=("pca",), checkpoints=False))
    name = args.study or tune.default_study(args.sequence, args.method)
    url = storage(args)
    runs_dir = Path(args.runs_dir) / name
    check_out(runs_dir, "--runs-dir", may_hold_files=True)  # before the storage is opened or made
    seq = sequence_for(cfg)
    if args.fail_running:
        say(f"prm: {tune.fail_running(url, name)} running trial(s) of {name} marked failed", err=True)
    bar = tqdm(total=args.trials, unit="trial", disable=args.quiet, dynamic_ncols=True)

    def train(config: RunConfig, run_dir: Path, number: int) -> Any:
        def show(event: Any) -> None:
            if event.type == "task_start":
                bar.set_postfix_str(f"trial {number}: task {event.task + 1}/{len(seq.tasks)}" + best)
        return train_recorded(config, run_dir, compile=args.compile, sequence=seq, emit=show)

    best = ""

    def after(study: Any) -> None:
        nonlocal best
        if study.best is not None:
            best = f", best val Acc {fmt(study.best.val_acc)} (trial {study.best.number})"
        bar.update(min(len(study.complete), args.trials) - bar.n)
        bar.set_postfix_str(best.lstrip(", "))

    try:
        with bar:
            study = tune.tune(config=cfg, url=url, study_name=name, trials=args.trials, runs_dir=runs_dir,
                              train=train, families=[t.family for t in seq.tasks], after=after)
    except KeyboardInterrupt:
        say(f"prm: interrupted; the trials finished so far are kept in study {name} on {tune.safe_url(url)}; the same command "
            "resumes it", err=True)
        return 130
    print_study(study, url=url, target=args.trials)
    return 0


def print_study(study: Any, *, url: str, target: int) -> None:
    """A study's state: its trials, the best one (chosen by validation Acc) with its run
    folder, and PS; every value from the storage printed whatever its type (:func:`shown`)."""
    from prm import tune

    done = study.complete
    lines = [f"study {study.name} on {tune.safe_url(url)}: {len(done)} of {target} trials complete "
             f"({shown(study.method)} on {shown(study.sequence)}, seed {shown(study.attrs.get('seed'))})"]
    running = sum(t.state == "running" for t in study.trials)
    if running:
        lines.append(f"{running} trial(s) still running on other workers")
    best = study.best
    if best is not None:
        lines.append(f"best trial {best.number} (chosen by validation Acc): val Acc {fmt(best.val_acc, 4)}, "
                     f"test Acc {fmt(best.test_acc, 4)}")
        lines.append("  " + params_text(best.params, "  "))
        folder = tune.run_folder(url, best)
        where = f"on {shown(best.host)}" if Path(best.run_dir or "").is_absolute() else "relative to the storage file"
        recorded = "not recorded" if best.run_dir is None else f"{shown(best.run_dir, 300)} ({where})"
        lines.append(f"  run folder: {folder if folder else recorded}")
    lines.append(f"PS (std of test Acc over the {len(done)} complete trials): {fmt(study.ps, 4)}")
    say(*lines)
