"""``prm compare``: Acc/BWT/FWT/CT over methods and seeds, each method's seeds trained
together in stacks (optionally in worker processes); ``--study`` shares the grid through an
Optuna storage, ``--tuned`` takes each method's best parameters from its tune study."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from prm import analysis
from prm import methods as methods_registry
from prm.cli.common import (check_method, check_out, check_sequence, fail, int_list, name_list, params_text, path,
                            say, study_name)
from prm.cli.options import add_training_options, run_config
from prm.cli.reports import Results, compare_table, family_table, say_tables
from prm.cli.tune import storage, train_recorded
from prm.config import RunConfig
from prm.data import make_sequence, sequence_for


def add_parser(sub: argparse._SubParsersAction) -> None:
    comp = sub.add_parser("compare", help="Acc/BWT/FWT/CT table over methods and seeds")
    comp.add_argument("--sequence", type=name_list("sequence"), default="digits-mixed",
                      help="one or more sequences, comma-separated, each once [%(default)s]")
    comp.add_argument("--methods", type=name_list("method"), default="prm,hat,ncl,stl",
                      help="comma-separated, each once [%(default)s]")
    comp.add_argument("--seeds", type=int_list, default=[0, 1, 2], help="comma-separated, each once [0,1,2]")
    comp.add_argument("--out-dir", type=path, default=None, help="also record every run under this folder")
    comp.add_argument("--jobs", type=int, default=1,
                      help="runs in parallel processes, at most one per stack of runs and per CPU [%(default)s]")
    comp.add_argument("--stack", type=int, default=8,
                      help="seeds of one method trained together, their networks stacked so that one step trains "
                           "all (results equal to separate runs to float rounding; CT is then the stack's); "
                           "1 trains each alone [%(default)s]")
    comp.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    comp.add_argument("--families", action="store_true",
                      help="also print just-learnt accuracy, Acc, BWT and FWT per task family")
    comp.add_argument("--quiet", action="store_true", help="no progress bar")
    comp.add_argument("--tuned", action="store_true",
                      help="each method with the best parameters of its tune study on --storage (by validation Acc), "
                           "and a PS column: the std of Acc over that study's trials")
    comp.add_argument("--storage", type=path, default=None,
                      help="Optuna storage: sqlite:///file.db, journal:///file.log or postgresql://user@host/db "
                           "[sqlite:///runs/optuna.db]")
    comp.add_argument("--study", type=study_name, default=None,
                      help="share the comparison as this study on --storage: the same command on several machines "
                           "trains each cell once, and the table comes from the storage (docs/tuning.md)")
    add_training_options(comp)
    comp.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    sequences, methods = args.sequence, args.methods  # lists, none empty or repeating (name_list)
    for s in sequences:
        check_sequence(s)
    for m in methods:
        check_method(m)
    if args.jobs < 1:
        fail(f"--jobs must be >= 1, got {args.jobs}")
    if args.stack < 1:
        fail(f"--stack must be >= 1, got {args.stack}")
    if args.out_dir:
        check_out(Path(args.out_dir), "--out-dir", may_hold_files=True)
    stl = analysis.SINGLE_TASK  # FWT's reference
    needed = methods if stl in methods else [*methods, stl]
    for sequence in sequences:  # a missing data set fails here, before anything trains
        make_sequence(sequence, seed=args.seeds[0], n_tasks=args.n_tasks, data_dir=args.data_dir or None,
                      shots=args.shots)
    if args.storage and not (args.study or args.tuned):
        fail("--storage is for --study (a shared comparison) or --tuned (the tune studies' best parameters)")
    tuned = _tuned(args, sequences, needed, shown=methods) if args.tuned else {}

    def config(sequence: str, method: str, seed: int) -> RunConfig:
        cfg = run_config(args, sequence=sequence, method=method, seed=seed)
        study = tuned.get((sequence, method))
        return cfg if study is None else _tuned_config(cfg, study)

    if args.study:
        return _compare_shared(args, {(q, m, seed): config(q, m, seed) for q in sequences for m in needed
                                      for seed in args.seeds}, methods=methods, tuned=tuned)
    batches, keys = _batches(args, sequences, needed, config)
    _print_tables(args, _train_batches(args, batches, keys), methods=methods, tuned=tuned)
    return 0


def _batches(args: argparse.Namespace, sequences: list[str], methods: list[str],
             config: Callable[[str, str, int], RunConfig]) -> tuple[list[tuple], list[tuple[str, str, int]]]:
    """compare's batches, each up to --stack seeds of one sequence and method trained
    together, and the key of every run in them, in order."""
    batches, keys = [], []
    for sequence in sequences:
        for method in methods:
            size = args.stack if methods_registry.get(method).stacks else 1  # Method.stacks says why
            for start in range(0, len(args.seeds), size):
                configs, outs = [], []
                for seed in args.seeds[start:start + size]:
                    configs.append(config(sequence, method, seed))
                    out = str(Path(args.out_dir) / f"{sequence}-{method}-s{seed}") if args.out_dir else None
                    if out and Path(out).exists():
                        fail(f"{out} already exists; choose another --out-dir")
                    outs.append(out)
                    keys.append((sequence, method, seed))
                batches.append((configs, outs, args.compile))
    return batches, keys


def _compare_stack(batch: tuple[list[RunConfig], list[str | None], str]) -> list[tuple[np.ndarray, float, list[str]]]:
    """Train one stack of runs together (in a worker process when --jobs > 1); return each
    run's R, CT (the stack's wall time: its runs share every step) and task families."""
    import torch

    from prm.engine import Job, train_together
    from prm.run import RunWriter

    torch.set_num_threads(1)
    configs, outs, compile = batch
    seqs = [sequence_for(c) for c in configs]
    jobs = [Job(config=c, sequence=q, emit=RunWriter(o, config=c) if o else None) for c, q, o in zip(configs, seqs, outs)]
    results = train_together(jobs, compile=compile)
    return [(r.test_acc, r.seconds, [t.family for t in q.tasks]) for r, q in zip(results, seqs)]


def _workers(jobs: int, batches: int) -> int:
    """How many worker processes ``--jobs`` starts: never more than there are batches (stacks
    of runs) to train, nor than CPUs, since each worker trains on one thread and more would
    only share the CPUs and multiply the memory (``--jobs 100000`` forked 100000). The CPU
    bound is said on stderr where it lowers the count."""
    cpus = os.cpu_count() or 1
    if min(jobs, batches) > cpus:
        say(f"prm: --jobs {jobs}: this machine has {cpus} CPU(s), so {cpus} stack(s) of runs train at a time",
            err=True)
    return min(jobs, batches, cpus)


def _train_batches(args: argparse.Namespace, batches: list[tuple], keys: list[tuple[str, str, int]]) -> Results:
    """Train compare's batches, here or in worker processes (:func:`_workers`); each run's
    output under its key, ``keys`` being the runs of every batch in order."""
    from contextlib import ExitStack

    from tqdm import tqdm

    workers = _workers(args.jobs, len(batches))
    results = {}
    pending = iter(keys)
    try:
        with tqdm(total=len(keys), unit="run", disable=args.quiet) as bar, ExitStack() as stack:
            if workers == 1:
                done = map(_compare_stack, batches)
            else:
                done = stack.enter_context(ProcessPoolExecutor(max_workers=workers)).map(_compare_stack, batches)
            for outputs in done:
                for output in outputs:
                    results[next(pending)] = output
                bar.update(len(outputs))
    except OSError as exc:  # the failing run's folder records it as failed
        if isinstance(exc, BrokenPipeError):
            raise
        fail(f"could not write the runs under {args.out_dir}: {exc}")
    return results


def _print_tables(args: argparse.Namespace, results: Results, *, methods: list[str], tuned: dict) -> None:
    rows = [r for r in compare_table(results) if r["method"] in methods]
    if args.tuned:
        for r in rows:
            study = tuned.get((r["sequence"], r["method"]))
            r["ps"] = None if study is None else study.ps
    families = [r for r in family_table(results) if r["method"] in methods] if args.families else None
    say_tables(rows, families, markdown=args.markdown)


def _tuned(args: argparse.Namespace, sequences: list[str], methods: list[str], *, shown: list[str]) -> dict:
    """``compare --tuned``: the study ``tune-SEQUENCE-METHOD`` of each pair on the storage, said
    on stderr; a method without one keeps the given options (its PS reads '-'; only methods
    asked for are named, not STL when it is only FWT's reference)."""
    from prm import tune

    url = storage(args)
    names = set(tune.study_names(url))
    found = {}
    for sequence in sequences:
        for method in methods:
            name = tune.default_study(sequence, method)
            study = tune.load_study(url, name) if name in names else None
            if study is None or study.best is None:
                if method in shown:
                    say(f"prm: {sequence} {method}: no study {name} on {tune.safe_url(url)}; the given options "
                        "are used", err=True)
                continue
            say(f"prm: {sequence} {method}: best of study {study.name} (trial {study.best.number} of "
                f"{len(study.complete)} by validation Acc): {params_text(study.best.params, ', ')}", err=True)
            found[(sequence, method)] = study
    return found


def _tuned_config(cfg: RunConfig, study: Any) -> RunConfig:
    """``cfg`` with the study's best parameters, or one error line: a storage is untrusted
    input, and a parameter that is not a number (a string, None, 10**400) or out of range
    must not become a traceback."""
    from prm import tune

    if study.attrs.get("setup") != tune.study_key(cfg):
        fail(f"study {study.name} tuned {cfg.method} with other training options than this command's; give "
             "compare the options given to tune (sequence length, width, epochs ...)")
    best = study.best
    try:
        return tune.apply_params(cfg, best.params)
    except (TypeError, ValueError, OverflowError) as exc:  # ConfigError is a ValueError
        reason = " ".join(str(exc).split())[:200]
        fail(f"study {study.name}: the parameters of its best trial {best.number} ({params_text(best.params, ', ')}) "
             f"cannot be used: {reason}")


def _compare_shared(args: argparse.Namespace, configs: dict, *, methods: list[str], tuned: dict) -> int:
    """``compare --study``: the grid as a study on the storage, shared by every machine that
    runs the same command; the table comes from the storage, whoever trained each cell."""
    from tqdm import tqdm

    from prm import tune

    url = storage(args)
    out_dir = Path(args.out_dir or f"runs/compare/{args.study}")
    check_out(out_dir, "--out-dir", may_hold_files=True)  # the default one too, before the storage is opened
    bar = tqdm(total=len(configs), unit="cell", disable=args.quiet, dynamic_ncols=True)

    sequences: dict[tuple, Any] = {}  # each cell's sequence, built once for its families and its run

    def sequence_of(config: RunConfig) -> Any:
        key = (config.sequence, config.seed, config.n_tasks, config.data_dir, config.shots)
        if key not in sequences:
            sequences[key] = sequence_for(config)
        return sequences[key]

    def train(config: RunConfig, run_dir: Path, number: int) -> Any:
        bar.set_postfix_str(f"trial {number}: {config.sequence} {config.method} seed {config.seed}")
        return train_recorded(config, run_dir, compile=args.compile, sequence=sequence_of(config))

    def after(study: Any) -> None:
        bar.update(len({tune.cell_of(t.params) for t in study.complete}) - bar.n)

    try:
        with bar:
            study = tune.compare_grid(configs=configs, url=url, study_name=args.study, out_dir=out_dir, train=train,
                                      families=lambda c: [t.family for t in sequence_of(c).tasks], after=after)
    except KeyboardInterrupt:
        say(f"prm: interrupted; the cells finished so far are kept in study {args.study} on {tune.safe_url(url)}; the same "
            "command trains the rest", err=True)
        return 130
    results: Results = {}
    for t in study.complete:
        results[tune.cell_of(t.params)] = (t.test_matrix, t.seconds or 0.0, list(t.families))
    missing = len(configs) - len(results)
    if missing:
        say(f"prm: {missing} of {len(configs)} cells are still running on other workers; the table holds "
            "the finished ones (run the command again later for all)", err=True)
    _print_tables(args, results, methods=methods, tuned=tuned)
    return 0

