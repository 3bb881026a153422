"""Command line: ``python -m prm run|compare|tune|table|show|whatif``.

    python -m prm run --sequence digits-mixed --method prm --seed 0 --out runs/my-run
    python -m prm compare --sequence digits-mixed --methods prm,hat,ncl,stl --seeds 0,1,2
    python -m prm table runs/compare/* --families   # compare's tables from recorded run folders
    python -m prm table runs/paper/* --paper        # beside the paper's Tables 2-5 (docs/results.md)
    python -m prm show runs/my-run
    python -m prm whatif runs/my-run --task 3 --similar 1 --out runs/my-run-whatif   # docs/whatif.md
    python -m prm tune --sequence digits-mixed-few --method prm --trials 20   # docs/tuning.md

A user mistake (unknown sequence or method, impossible number, existing output folder,
malformed data file, an empty path) or an environment failure (a full disk) prints one line
starting with ``prm: error:`` and exits with status 2; nothing is created before training
starts, and a run that fails while being written keeps every whole record it wrote and loads
as 'failed' (one that recorded nothing is removed: only the files it wrote). Ctrl-C exits
with 130. When the reader of stdout goes away (``python -m prm show RUN | head -1``) the
command stops quietly with status 141 (128 + SIGPIPE), as a program killed by SIGPIPE would.
Every line printed, on stdout or stderr, passes through ``prm.text.terminal``: a name from a
run folder, a data file or a storage cannot act on the terminal or fail the print.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import os
import numbers
import re
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from prm.config import (COMPILE_MODES, MAX_LAYERS, METHOD_HELP, METHODS, PRESETS, PRM_CHOICES, VARIANT_LEVERS, ConfigError, PRMConfig,
                        RunConfig, preset)
from prm.data import DATA_ENV, SEQUENCES, DataError, make_sequence
from prm.methods import STRATEGIES
from prm.text import terminal


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one clear line, not the whole usage block
        command = " ".join(["python -m prm", *self.prog.split()[1:]])  # prog is "prm" or "prm run"
        self.exit(2, f"prm: error: {terminal(message)} (see '{command} --help')\n")


def _say(*lines: str, err: bool = False) -> None:
    """Print ``lines``, one each, on stdout (stderr with ``err``), each made safe for a
    terminal first (:func:`prm.text.terminal`). Every line the CLI prints goes through here:
    nearly all quote a run folder, a data file or a storage, untrusted input all (a task
    name carrying an escape sequence, a folder name that is not UTF-8: a lone surrogate)."""
    print("\n".join(map(terminal, lines)), file=sys.stderr if err else sys.stdout)


def _fail(message: str) -> None:
    _say(f"prm: error: {message}", err=True)
    raise SystemExit(2)


def _path(text: str) -> str:
    """A folder, file or storage named on the command line. An empty or blank name is refused
    here: the commands read a false value as "not given" and would put the output in the
    default place without a word (``run --out ''`` wrote to runs/...)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path names no folder or file; give one or leave the option out")
    return text


def _once(values: list, what: str, text: str) -> None:
    """Refuse a list naming one item twice: compare would train it twice and keep one (or,
    with --out-dir, write its run folder twice and fail half-way)."""
    seen = set()
    for value in values:
        if value in seen:
            raise argparse.ArgumentTypeError(f"{text!r} names {what} {value} twice; give each once")
        seen.add(value)


def _int_list(text: str) -> list[int]:
    """``--seeds``: comma-separated non-negative integers, at least one, each once."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    _once(values, "seed", text)
    return values


def _name_list(what: str) -> Callable[[str], list[str]]:
    """An argparse type for ``compare --sequence`` and ``--methods``: comma-separated names,
    at least one, each once (``--methods ,`` trained STL alone and printed an empty table)."""
    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        if not names:
            raise argparse.ArgumentTypeError(f"{text!r} names no {what}")
        _once(names, what, text)
        return names

    return parse


def _study(text: str) -> str:
    """``--study``: a study name that is also one plain folder name, since it names the folder
    its runs go to (RUNS_DIR/STUDY for tune, runs/compare/STUDY for compare): no '/', not '.'
    or '..' (``../../x`` put the runs three folders above RUNS_DIR), printable characters
    only (no newline, NUL or right-to-left override) and at most 255 bytes."""
    plain = (text.strip() and text not in (".", "..") and "/" not in text and (os.altsep or "/") not in text
             and text.isprintable() and len(os.fsencode(text)) <= 255)
    if not plain:
        raise argparse.ArgumentTypeError(f"{text!r} is not a plain folder name (printable characters, no '/', "
                                         "not '.' or '..', at most 255 bytes); the study names its runs' folder")
    return text


def _add_training_options(p: argparse.ArgumentParser) -> None:
    d = RunConfig()
    g = p.add_argument_group("model and training (unset options come from --preset; defaults in brackets)")
    g.add_argument("--preset", default="default", choices=list(PRESETS),
                   help="default: sized for the bundled data; paper: the PRM paper's set-up "
                        "(2000 units, lr 0.025 to 0.001, batch 64) [%(default)s]")
    g.add_argument("--data-dir", type=_path, default=None,
                   help="folder with the paper's data sets (EMNIST, CIFAR-100 binary, LEAF); default $PRM_DATA")
    g.add_argument("--n-tasks", type=int, default=None, help="number of tasks [the sequence's default]")
    g.add_argument("--shots", type=int, default=None,
                   help="few-shot (-few) and binary (-binary) sequences: training images per class (per answer) of "
                        "each writer or style task [the sequence's default]")
    g.add_argument("--width", type=int, help=f"units per hidden layer [{d.model.hidden[0]}]")
    g.add_argument("--layers", type=int, help=f"masked hidden layers [{len(d.model.hidden)}]")
    g.add_argument("--epochs", type=int, help=f"max epochs per task [{d.optim.max_epochs}]")
    g.add_argument("--lr", type=float, help=f"initial SGD learning rate [{d.optim.lr}]")
    g.add_argument("--batch-size", type=int, help=f"[{d.optim.batch_size}]")
    g.add_argument("--patience", type=int,
                   help=f"epochs without validation improvement before lr is divided [{d.optim.patience}]")
    g.add_argument("--lamb", type=float, help=f"mask sparsity regulariser strength [{d.hat.lamb}]")
    g.add_argument("--smax", type=float, help=f"HAT's maximal mask slope [{d.hat.smax}]")
    g.add_argument("--dropout", type=float, help=f"hidden dropout [{d.model.hidden_dropout}]")
    g.add_argument("--input-dropout", type=float, help=f"dropout of the input [{d.model.input_dropout}]")
    g.add_argument("--dtd-epochs", type=int, help=f"PRM: max epochs of DTD's 2nd optimisation [{d.prm.dtd_epochs}]")
    g.add_argument("--head-epochs", type=int, help=f"PRM: epochs of DTD's 1st optimisation [{d.prm.head_epochs}]")
    g.add_argument("--settle", type=int,
                   help=f"PRM: end DTD's 2nd optimisation once its answer has not changed for this many checks; "
                        f"0 keeps the paper's fixed budget [{d.prm.settle}]")
    g.add_argument("--settle-every", type=int, help=f"PRM: epochs between those checks [{d.prm.settle_every}]")
    g.add_argument("--no-2so", action="store_true", help="PRM: DTD without the 1st optimisation (paper's 'w/o 2SO')")
    g.add_argument("--reg-mask", choices=("accumulated", "relaxed"),
                   help=f"PRM: mask the sparsity regulariser treats as used in LwPRM [{d.prm.reg_mask}]")
    def lever(name: str) -> str:  # "[default; prm+: its value]" for the help texts
        variants = "".join(f"; {m}: {v[name]}" for m, v in VARIANT_LEVERS.items() if name in v)
        return f"[{getattr(PRMConfig(), name)}{variants}]"

    g.add_argument("--features", choices=PRM_CHOICES["features"],
                   help=f"PRM: what DTD clusters (docs/dtd-study.md) {lever('features')}")
    g.add_argument("--clustering", choices=PRM_CHOICES["clustering"],
                   help=f"PRM: DTD's rule {lever('clustering')}")
    g.add_argument("--threshold", type=float,
                   help=f"PRM: cosine distance of the linkage and cut rules {lever('threshold')}")
    g.add_argument("--relax", type=float,
                   help=f"PRM: 0 protects similar tasks' units as HAT, 1 frees them (the paper) {lever('relax')}")
    g.add_argument("--embedding-init", choices=PRM_CHOICES["embedding_init"],
                   help=f"PRM: the new task's embedding before DTD {lever('embedding_init')}")
    g.add_argument("--head-init", choices=PRM_CHOICES["head_init"],
                   help=f"PRM: the new task's head before LwPRM {lever('head_init')}")
    g.add_argument("--dtd-layers", choices=PRM_CHOICES["layers"],
                   help=f"PRM: one DTD call per masked layer, or one for all layers together {lever('layers')}")
    g.add_argument("--detect-epochs", type=int,
                   help=f"CAT: max epochs of each transfer and reference training [{d.cat.detect_epochs}]")
    g.add_argument("--kta-weight", type=float, help=f"CAT: weight of the attention head's loss [{d.cat.kta_weight}]")
    g.add_argument("--cat-heads", type=int, help=f"CAT: heads of the knowledge-transfer attention [{d.cat.heads}]")
    g.add_argument("--ewc-lambda", type=float, help=f"EWC penalty strength [{d.ewc_lambda}]")
    g.add_argument("--no-umap", action="store_true", help="store only PCA projections (skips UMAP's compile at run end)")
    g.add_argument("--no-checkpoints", action="store_true",
                   help="keep no task-start checkpoints (what-if needs them; docs/whatif.md gives their size)")
    g.add_argument("--device", default="cpu", help="cpu or cuda [%(default)s]")
    g.add_argument("--compile", default="auto", choices=COMPILE_MODES,
                   help="SGD steps compiled by torch.compile (results agree with eager to float rounding; "
                        "auto: where measured to pay, docs/speed.md) [%(default)s]")


_OVERRIDES = {  # CLI option -> (config section, field)
    "epochs": ("optim", "max_epochs"), "lr": ("optim", "lr"), "batch_size": ("optim", "batch_size"),
    "patience": ("optim", "patience"), "lamb": ("hat", "lamb"), "smax": ("hat", "smax"),
    "dropout": ("model", "hidden_dropout"), "input_dropout": ("model", "input_dropout"), "dtd_epochs": ("prm", "dtd_epochs"),
    "head_epochs": ("prm", "head_epochs"), "reg_mask": ("prm", "reg_mask"),
    "settle": ("prm", "settle"), "settle_every": ("prm", "settle_every"),
    **{name: ("prm", name) for name in ("features", "clustering", "threshold", "relax", "embedding_init", "head_init")},
    "dtd_layers": ("prm", "layers"),
    "detect_epochs": ("cat", "detect_epochs"), "kta_weight": ("cat", "kta_weight"), "cat_heads": ("cat", "heads"),
}


def _device_problem(device: str) -> str | None:
    """Why ``device`` cannot train on this machine (no CUDA, no CUDA device of that index),
    None when it can: the one check of ``run``, ``compare`` and ``tune`` (their --device) and
    of ``whatif`` (the device its parent was recorded on)."""
    if not device.startswith("cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device is available on this machine"
    index = device.partition(":")[2]
    if index and (re.fullmatch("[0-9]{1,4}", index) is None or int(index) >= torch.cuda.device_count()):
        return f"this machine has CUDA devices 0 to {torch.cuda.device_count() - 1}"
    return None


def _config(args: argparse.Namespace, *, sequence: str, method: str, seed: int) -> RunConfig:
    problem = _device_problem(args.device)
    if problem:
        _fail(f"--device {args.device}: {problem}")
    base = preset(args.preset, method=method).to_dict()
    for option, (section, name) in _OVERRIDES.items():
        if getattr(args, option) is not None:
            base[section][name] = getattr(args, option)
    if args.width is not None or args.layers is not None:
        width = args.width if args.width is not None else base["model"]["hidden"][0]
        layers = args.layers if args.layers is not None else len(base["model"]["hidden"])
        if not 1 <= layers <= MAX_LAYERS:  # checked before [width] * layers is built
            _fail(f"--layers must be from 1 to {MAX_LAYERS}, got {layers}")
        base["model"]["hidden"] = [width] * layers
    base["optim"]["lr_min"] = min(base["optim"]["lr_min"], base["optim"]["lr"])
    if args.no_2so:
        base["prm"]["two_stage"] = False
    if args.no_umap:
        base["record"]["projections"] = ["pca"]
    if args.no_checkpoints:
        base["record"]["checkpoints"] = False
    if args.ewc_lambda is not None:
        base["ewc_lambda"] = args.ewc_lambda
    data_dir = args.data_dir or os.environ.get(DATA_ENV)
    return RunConfig.from_dict({**base, "sequence": sequence, "n_tasks": args.n_tasks, "shots": args.shots,
                                "method": method,
                                "seed": seed, "device": args.device, "data_dir": data_dir})


def _check_sequence(name: str) -> None:
    if name not in SEQUENCES:
        _fail(f"unknown sequence {name!r}; choose one of {', '.join(SEQUENCES)}")


def _check_method(name: str) -> None:
    if name not in METHODS:
        _fail(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")


def _check_out(path: Path, option: str, *, may_hold_files: bool = False) -> None:
    """Refuse an output folder before anything is created: ``path`` must be a folder or not
    exist yet, be empty unless ``may_hold_files``, and not lie under a file."""
    try:
        if path.exists() and not path.is_dir():
            _fail(f"{option} {path} is a file, not a folder")
        if path.is_dir():
            if not may_hold_files and any(path.iterdir()):
                _fail(f"{option} {path} already exists and is not empty; choose another")
            return
        for parent in path.absolute().parents:
            if parent.exists():
                if not parent.is_dir():
                    _fail(f"{option} {path} lies under {parent}, which is a file")
                return
    except OSError as exc:
        _fail(f"{option} {path}: {exc}")


def _settle_failed_write(out: Path, writer: Any, error: OSError) -> str:
    """After a write error, keep every whole record the run wrote; say what the folder holds.

    A run that recorded anything (its first record is ``run_started``) is kept: the log is
    cut back to whole records and closed with a 'failed' line where one still fits, so it
    loads as failed, with the tasks it completed, the reason in its closing record. Only a
    run that recorded nothing is removed, and then only the files and folders its writer
    made (``RunWriter.discard``): a parent folder holding another run, or a file someone
    else put into the run folder, stays.
    """
    writer.close(error=error)
    if not writer.records:
        if writer.discard():
            return "nothing was recorded: the run folder was removed"
        return f"nothing was recorded: what the run wrote was removed; {out} holds files this run did not write and is kept"
    if writer.status is None:
        return (f"what was recorded is kept in {out}; not even a closing line fitted, so it reads as a failed run "
                "once this command has exited")
    if writer.status == "failed":
        return f"what was recorded is kept in {out} as a failed run"
    return (f"the run {writer.status} and is kept in {out}; the explorer computes any missing projections "
            "when it opens the run")


# ----------------------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    from prm.engine import train_sequence

    _check_sequence(args.sequence)
    _check_method(args.method)
    cfg = _config(args, sequence=args.sequence, method=args.method, seed=args.seed)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out if args.out is not None else f"runs/{args.sequence}-{args.method}-s{args.seed}-{stamp}")
    _check_out(out, "--out")
    seq = make_sequence(cfg.sequence, seed=cfg.seed, n_tasks=cfg.n_tasks, data_dir=cfg.data_dir, shots=cfg.shots)
    writer = _open_writer(out, config=cfg)  # nothing is created on disk before this point
    return _record(out, writer, tasks=len(seq.tasks), quiet=args.quiet,
                   train=lambda emit: train_sequence(cfg, emit=emit, sequence=seq, compile=args.compile))


def _open_writer(out: Path, **kwargs: Any) -> Any:
    """The run folder's writer (``RunWriter(out, **kwargs)``), or one ``prm: error:`` line; a
    writer that fails half-way (a full disk, Ctrl-C) has removed what it made. It does not
    finalize: :func:`_record` writes the summary and the projections after it."""
    from prm.runs import RunWriter

    try:
        return RunWriter(out, finalize=False, **kwargs)
    except FileExistsError as exc:  # appeared since _check_out
        _fail(str(exc))
    except OSError as exc:
        _fail(f"could not create the run folder {out}: {exc}")


def _record(out: Path, writer: Any, *, tasks: int, quiet: bool,
            train: Callable[[Callable[[Any], None]], Any]) -> int:
    """Train through ``train(emit)`` into ``writer`` (made with ``finalize=False``) with a
    progress bar, and end as ``run`` and ``whatif`` both do: exit 130 on Ctrl-C with what was
    left, one error line on a write failure (:func:`_settle_failed_write`), else the
    summary, then the projections, then 0 for a finished run.

    The run is complete (``run_end`` line, summary.json, the summary printed) before UMAP
    starts: its first fit in a process may compile for seconds, under its own progress line.
    """
    from tqdm import tqdm

    from prm.runs import write_summary

    bar = tqdm(total=tasks, unit="task", disable=quiet, dynamic_ncols=True)

    def emit(event: Any) -> None:
        writer(event)
        _show_progress(bar, event)

    try:
        try:
            result = train(emit)
        finally:
            bar.close()
            if writer.ended:  # its status is settled, whatever it is: the summary follows it
                write_summary(out)
    except KeyboardInterrupt:
        _say(_interrupted(out, writer), err=True)
        return 130
    except OSError as exc:  # a full disk, a folder removed under us ...
        if isinstance(exc, BrokenPipeError):
            raise
        _fail(f"could not write the run {out}: {exc}; {_settle_failed_write(out, writer, exc)}")
    _print_summary(out)
    if not _write_projections(out, writer, quiet=quiet):
        return 130
    return 0 if result.status == "finished" else 1


def _write_projections(out: Path, writer: Any, *, quiet: bool) -> bool:
    """The run's projections, after its summary, with their own progress line on stderr and
    the seconds they took; False after Ctrl-C (said in one line, the run kept as it is).

    The run is already complete, so nothing here changes its status: a full disk is one error
    line as anywhere else (exit 2, the run kept), and a projection that fails is a warning,
    since the explorer computes missing projections when it opens the run.
    """
    import time

    from tqdm import tqdm

    from prm.runs import write_projections

    bars = []  # made at the first step, when the number of projections is known
    dropped = []  # Ctrl-C that landed in one of llvmlite's ctypes callbacks while numba compiled
    previous_hook = sys.unraisablehook

    def note_dropped(unraisable: Any) -> None:  # where ctypes reports an exception it drops
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            dropped.append(unraisable.exc_value)
        else:
            previous_hook(unraisable)

    def progress(done: int, total: int, step: str) -> None:
        if dropped:  # raised again between fits, so it still stops the run before the file is written
            raise KeyboardInterrupt
        if not bars:
            bars.append(tqdm(total=total, desc="projections", unit="fit", disable=quiet, dynamic_ncols=True,
                             leave=False))
        bars[0].update(done - bars[0].n)
        bars[0].set_postfix_str(step)

    started = time.perf_counter()
    sys.unraisablehook = note_dropped
    try:
        try:
            count = write_projections(out, progress=progress)
        finally:
            sys.unraisablehook = previous_hook
            for bar in bars:
                bar.close()
    except KeyboardInterrupt:
        _say(_interrupted(out, writer), err=True)
        return False
    except OSError as exc:
        _fail(f"could not write the run {out}: {exc}; {_settle_failed_write(out, writer, exc)}")
    except Exception as exc:  # UMAP or numba failing: the run stands, the explorer tries again
        _say(f"prm: warning: projections failed ({type(exc).__name__}: {str(exc)[:200]}); the run finished "
             f"and is saved in {out}; the explorer computes projections when it opens the run", err=True)
        return True
    if count and not quiet:
        _say(f"projections: {count} in {time.perf_counter() - started:.1f} s, in {out / 'projections.npz'}",
             err=True)
    return True


def _show_progress(bar: Any, event: Any) -> None:
    """The progress bar of ``run`` and ``whatif``: the latest epoch, one step per task."""
    if event.type == "epoch":
        bar.set_postfix_str(f"task {event.task + 1} {event.phase} epoch {event.epoch + 1} "
                            f"val_acc {event.val_acc:.3f}", refresh=False)
    elif event.type == "task_end":
        bar.update(1)


# ----------------------------------------------------------------------------- whatif


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


def cmd_whatif(args: argparse.Namespace) -> int:
    from prm import whatif
    from prm.engine import train_sequence

    out = Path(args.out)
    _check_out(out, "--out")
    try:
        plan = whatif.plan(args.run, task=args.task - 1, similar=[t - 1 for t in args.similar])
        seq = whatif.sequence(plan)
    except whatif.WhatIfError as exc:
        _fail(str(exc))
    problem = _device_problem(plan.config.device)
    if problem:  # the child replays its parent on the parent's device (prm.whatif), or not at all
        _fail(f"{args.run} was recorded on {plan.config.device}, and {problem}; a what-if replays its parent "
              "on the parent's device (docs/whatif.md): ask it on a machine that has one")
    writer = _open_writer(out, config=plan.config, parent=plan.link())
    similar = ", ".join(f"T{i + 1}" for i in plan.link().similar(0)) or "none"
    _say(f"what-if of {args.run} from task {args.task}: similar {similar}, every other earlier task dissimilar",
         err=True)
    return _record(out, writer, tasks=len(seq.tasks), quiet=args.quiet,
                   train=lambda emit: train_sequence(plan.config, emit=whatif.replaying(plan, emit), sequence=seq,
                                                     resume=plan.resume(), compile=plan.compile))


def _interrupted(out: Path, writer: Any) -> str:
    """What Ctrl-C left, in words that agree with what the folder holds.

    Once training finished, ``_record`` writes the summary, prints it and then computes the
    projections; an interrupt there leaves a finished run, not a stopped one, without
    projections.npz (and, in the moment the summary is written, without summary.json).
    """
    if writer.status != "finished":
        return f"stopped: the run so far is saved in {out}"
    if not (out / "summary.json").is_file():
        return (f"interrupted while writing the summary: the run finished and is saved in {out} without "
                "summary.json or projections.npz; the explorer reads it from its event log and computes "
                "projections when it opens the run")
    return (f"interrupted while computing projections: the run finished (summary written) and is saved in {out} "
            "without projections.npz; the explorer computes projections when it opens the run")


# ----------------------------------------------------------------------------- show


def _number(value: Any) -> float | None:
    """``value`` as a float if it is a number a float holds, else None: what is printed comes
    from run folders and Optuna storages, which may hold any JSON value (a string, 10**400)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _fmt(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals; '-' for one that is missing, not finite or not a number."""
    number = _number(value)
    return "-" if number is None or not np.isfinite(number) else f"{number:.{digits}f}"


def _shown(value: Any, limit: int = 60) -> str:
    """A study's value on one short line: a number to 4 significant digits, a printable string
    as it is, anything else as its repr, cut at ``limit`` characters."""
    number = _number(value)
    if number is not None:
        return f"{number:.4g}"
    if isinstance(value, str):
        text = terminal(value)
    else:
        try:
            text = repr(value)
        except (ValueError, RecursionError):  # an int past Python's 4300-digit limit, deep nesting
            text = f"<{type(value).__name__}>"
        text = terminal(text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _params_text(params: dict[str, Any], sep: str) -> str:
    """A trial's parameters as ``name value`` pairs, whatever types the storage gave them."""
    return sep.join(f"{_shown(k, 40)} {_shown(v)}" for k, v in params.items())


def _print_summary(folder: Path) -> None:
    """Print a run's summary; built whole first, so a damaged run prints nothing but the error."""
    from prm.runs import load_run, summarise

    run = load_run(folder)
    s = summarise(run)  # from the event log, the record itself; summary.json is only a cache for the picker
    lines: list[str] = []
    lines.append(f"run      {run.path}")
    lines.append(f"status   {run.status}   sequence {s['sequence']}   method {s['method']}   seed {s['seed']}")
    lines.append(f"tasks    {s['tasks_done']}/{s['n_tasks']} learnt   Acc {_fmt(s['acc'])}   BWT {_fmt(s['bwt'])}   "
                 f"CT {_fmt(s['seconds'], 1)} s   phases " +
                 ", ".join(f"{k} {v:.1f} s" for k, v in s["phase_seconds"].items()))
    R = run.state.accuracy_matrix("test")
    names = [t["name"] for t in run.state.tasks]
    if run.state.tasks_done:
        lines.append("accuracy matrix R[j, i] (row: after learning task Tj; column: tested on task Ti)")
        for j in range(run.state.tasks_done):
            lines.append(f"  T{j + 1:<3} {terminal(names[j])[:18]:<18} "
                         + " ".join(_fmt(v, 2).rjust(4) for v in R[j, : j + 1]))
    if run.state.dtd:
        lines.append("DTD: X-means clusters k and the earlier tasks protected as dissimilar, per masked layer "
                     "(the rule or ablation that decided instead of X-means in brackets)")
    for task, record in sorted(run.state.dtd.items()):
        decided_by = "" if record.source == "xmeans" else f" ({record.source})"
        parts = [f"layer {l}: k={layer['xmeans']['k']} dissimilar=[{', '.join(f'T{i + 1}' for i in layer['dissimilar'])}]"
                 + decided_by + (" (undecided)" if layer.get("undecided") and record.source == "xmeans" else "")
                 for l, layer in enumerate(record.layers)]
        lines.append(f"  T{task + 1:<3} " + "; ".join(parts))
    if run.state.transfer:
        lines.append("CAT: validation accuracy of each earlier task's transfer network against the reference "
                     "network; similar when higher")
    for task, test in sorted(run.state.transfer.items()):
        accs = " ".join(f"T{j + 1} {a:.2f}{'*' if j in test.similar else ''}" for j, a in enumerate(test.transfer_acc))
        lines.append(f"  T{task + 1:<3} reference {test.reference_acc:.2f}; {accs} "
                     f"(similar: {', '.join(f'T{j + 1}' for j in test.similar) or 'none'})")
    for warning in filter(None, [run.status_note, *run.warnings]):
        lines.append(f"warning: {warning}")
    _say(*lines)


def cmd_show(args: argparse.Namespace) -> int:
    from prm.runs import RunFormatError

    try:
        _print_summary(Path(args.run))
    except RunFormatError as exc:
        _fail(str(exc))
    except BrokenPipeError:
        raise
    except Exception as exc:  # show reads nothing but the folder: any failure means it is damaged
        _fail(f"{args.run}: cannot show this run, it is damaged ({type(exc).__name__}: {exc})")
    return 0


# ----------------------------------------------------------------------------- compare


def _compare_stack(batch: tuple[list[RunConfig], list[str | None], str]) -> list[tuple[np.ndarray, float, list[str]]]:
    """Train one stack of runs together (in a worker process when --jobs > 1); return each
    run's R, CT (the stack's wall time: its runs share every step) and task families."""
    import torch

    from prm.engine import Job, train_together
    from prm.runs import RunWriter

    torch.set_num_threads(1)
    configs, outs, compile = batch
    seqs = [make_sequence(c.sequence, seed=c.seed, n_tasks=c.n_tasks, data_dir=c.data_dir, shots=c.shots)
            for c in configs]
    jobs = [Job(config=c, sequence=q, emit=RunWriter(o, config=c) if o else None) for c, q, o in zip(configs, seqs, outs)]
    results = train_together(jobs, compile=compile)
    return [(r.test_acc, r.seconds, [t.family for t in q.tasks]) for r, q in zip(results, seqs)]


Results = dict[tuple[str, str, int], tuple[np.ndarray, float, list[str]]]  # (sequence, method, seed) -> R, CT, families


def _mean_std(values: dict[str, list[float]]) -> dict[str, tuple[float, float] | None]:
    """Each metric's (mean, std) over seeds; None where no seed gave a value."""
    return {key: (float(np.mean(v)), float(np.std(v))) if v else None for key, v in values.items()}


def compare_table(results: Results) -> list[dict[str, Any]]:
    """Acc, BWT, FWT (against STL of the same sequence and seed), CT: mean and std over seeds."""
    from prm import metrics

    rows = []
    for sequence in dict.fromkeys(k[0] for k in results):
        for method in dict.fromkeys(k[1] for k in results if k[0] == sequence):
            seeds = sorted(k[2] for k in results if k[:2] == (sequence, method))
            values: dict[str, list[float]] = {"acc": [], "bwt": [], "fwt": [], "ct": []}
            for seed in seeds:
                R, seconds, _ = results[(sequence, method, seed)]
                values["acc"].append(metrics.average_accuracy(R))
                values["bwt"].append(metrics.backward_transfer(R))
                values["ct"].append(seconds)
                stl = results.get((sequence, "stl", seed))
                if stl is not None:
                    values["fwt"].append(metrics.forward_transfer(R, np.diag(stl[0])))
            rows.append({"sequence": sequence, "method": method, "seeds": len(seeds), **_mean_std(values)})
    return rows


def family_table(results: Results) -> list[dict[str, Any]]:
    """Per task family (writers, classes, style-A ...): just-learnt accuracy (the diagonal),
    Acc, BWT and FWT over that family's tasks only, mean and std over seeds. This splits the
    stability-plasticity picture: forward gains show in FWT, losses of earlier similar tasks
    in BWT."""
    from prm import metrics

    rows = []
    for sequence, method in dict.fromkeys(k[:2] for k in results):
        seeds = sorted(k[2] for k in results if k[:2] == (sequence, method))
        families = dict.fromkeys(f for seed in seeds for f in results[(sequence, method, seed)][2])
        for family in families:
            values: dict[str, list[float]] = {"diag": [], "acc": [], "bwt": [], "fwt": []}
            counts = []
            for seed in seeds:
                R, _, fams = results[(sequence, method, seed)]
                tasks = [i for i, f in enumerate(fams) if f == family]
                if not tasks or tasks[0] >= metrics.completed_rows(R):
                    continue
                counts.append(len(tasks))
                values["diag"].append(metrics.just_learnt(R, tasks))
                values["acc"].append(metrics.average_accuracy(R, tasks))
                values["bwt"].append(metrics.backward_transfer(R, tasks))
                stl = results.get((sequence, "stl", seed))
                if stl is not None:
                    values["fwt"].append(metrics.forward_transfer(R, np.diag(stl[0]), tasks))
            tasks = (f"{min(counts)}-{max(counts)}" if counts and min(counts) != max(counts)
                     else str(counts[0] if counts else 0))
            rows.append({"sequence": sequence, "method": method, "family": family, "tasks": tasks, **_mean_std(values)})
    return rows


def _cell(v: tuple[float, float] | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v[0]:.{digits}f} ± {v[1]:.{digits}f}"


def _layout(head: list[str], body: list[list[str]], *, markdown: bool) -> str:
    """The table's text; its cells made safe for a terminal first, so that the columns are
    measured as they are printed (a family or sequence name comes from a run file)."""
    body = [[terminal(x) for x in line] for line in body]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(b) + " |" for b in body])
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(line, widths)) for line in [head, *body])


def format_family_table(rows: list[dict[str, Any]], *, markdown: bool) -> str:
    head = ["sequence", "method", "family", "tasks", "just learnt", "Acc", "BWT", "FWT"]
    body = [[r["sequence"], r["method"], r["family"], r["tasks"], _cell(r["diag"]), _cell(r["acc"]), _cell(r["bwt"]),
             _cell(r["fwt"])] for r in rows]
    return _layout(head, body, markdown=markdown)


def format_table(rows: list[dict[str, Any]], *, markdown: bool) -> str:
    """compare's table; with a PS column (``compare --tuned``) when the rows carry "ps"."""
    with_ps = any("ps" in r for r in rows)
    head = ["sequence", "method", "seeds", "Acc", "BWT", "FWT", "CT s", *(["PS"] if with_ps else [])]
    body = [[r["sequence"], r["method"], str(r["seeds"]), _cell(r["acc"]), _cell(r["bwt"]), _cell(r["fwt"]),
             _cell(r["ct"], 1), *([_fmt(r.get("ps"))] if with_ps else [])] for r in rows]
    return _layout(head, body, markdown=markdown)


def cmd_compare(args: argparse.Namespace) -> int:
    sequences, methods = args.sequence, args.methods  # lists, none empty or repeating (_name_list)
    for s in sequences:
        _check_sequence(s)
    for m in methods:
        _check_method(m)
    if args.jobs < 1:
        _fail(f"--jobs must be >= 1, got {args.jobs}")
    if args.stack < 1:
        _fail(f"--stack must be >= 1, got {args.stack}")
    if args.out_dir:
        _check_out(Path(args.out_dir), "--out-dir", may_hold_files=True)
    needed = methods if "stl" in methods else [*methods, "stl"]  # STL is FWT's reference
    for sequence in sequences:  # a missing data set fails here, before anything trains
        make_sequence(sequence, seed=args.seeds[0], n_tasks=args.n_tasks, data_dir=args.data_dir or None,
                      shots=args.shots)
    if args.storage and not (args.study or args.tuned):
        _fail("--storage is for --study (a shared comparison) or --tuned (the tune studies' best parameters)")
    tuned = _tuned(args, sequences, needed, shown=methods) if args.tuned else {}

    def config(sequence: str, method: str, seed: int) -> RunConfig:
        cfg = _config(args, sequence=sequence, method=method, seed=seed)
        study = tuned.get((sequence, method))
        return cfg if study is None else _tuned_config(cfg, study)

    if args.study:
        return _compare_shared(args, {(q, m, seed): config(q, m, seed) for q in sequences for m in needed
                                      for seed in args.seeds}, methods=methods, tuned=tuned)
    batches, keys = [], []  # one batch: up to --stack seeds of one sequence and method, trained together
    for sequence in sequences:
        for method in needed:
            # CAT's transfer tests and attention steps run outside the shared step, so stacked
            # CAT seeds would wait for each other and each run's clock would count the others'
            size = 1 if STRATEGIES[method].cat else args.stack
            for start in range(0, len(args.seeds), size):
                configs, outs = [], []
                for seed in args.seeds[start:start + size]:
                    configs.append(config(sequence, method, seed))
                    out = str(Path(args.out_dir) / f"{sequence}-{method}-s{seed}") if args.out_dir else None
                    if out and Path(out).exists():
                        _fail(f"{out} already exists; choose another --out-dir")
                    outs.append(out)
                    keys.append((sequence, method, seed))
                batches.append((configs, outs, args.compile))
    _print_tables(args, _train_batches(args, batches, keys), methods=methods, tuned=tuned)
    return 0


def _workers(jobs: int, batches: int) -> int:
    """How many worker processes ``--jobs`` starts: never more than there are batches (stacks
    of runs) to train, nor than CPUs, since each worker trains on one thread and more would
    only share the CPUs and multiply the memory (``--jobs 100000`` forked 100000). The CPU
    bound is said on stderr where it lowers the count."""
    cpus = os.cpu_count() or 1
    if min(jobs, batches) > cpus:
        _say(f"prm: --jobs {jobs}: this machine has {cpus} CPU(s), so {cpus} stack(s) of runs train at a time",
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
        _fail(f"could not write the runs under {args.out_dir}: {exc}")
    return results


def _print_tables(args: argparse.Namespace, results: Results, *, methods: list[str], tuned: dict) -> None:
    rows = [r for r in compare_table(results) if r["method"] in methods]
    if args.tuned:
        for r in rows:
            study = tuned.get((r["sequence"], r["method"]))
            r["ps"] = None if study is None else study.ps
    families = [r for r in family_table(results) if r["method"] in methods] if args.families else None
    _say_tables(rows, families, markdown=args.markdown)


def _say_tables(rows: list[dict[str, Any]], families: list[dict[str, Any]] | None, *, markdown: bool) -> None:
    """compare's table, and the per-family one unless ``families`` is None (compare, table)."""
    _say(*format_table(rows, markdown=markdown).split("\n"))
    if families is not None:
        _say("", "per task family (FWT against STL of the same seed):",
             *format_family_table(families, markdown=markdown).split("\n"))


def _storage(args: argparse.Namespace) -> str:
    from prm import tune

    return args.storage or tune.DEFAULT_STORAGE


def _tuned(args: argparse.Namespace, sequences: list[str], methods: list[str], *, shown: list[str]) -> dict:
    """``compare --tuned``: the study ``tune-SEQUENCE-METHOD`` of each pair on the storage, said
    on stderr; a method without one keeps the given options (its PS reads '-'; only methods
    asked for are named, not STL when it is only FWT's reference)."""
    from prm import tune

    url = _storage(args)
    names = set(tune.study_names(url))
    found = {}
    for sequence in sequences:
        for method in methods:
            name = tune.default_study(sequence, method)
            study = tune.load_study(url, name) if name in names else None
            if study is None or study.best is None:
                if method in shown:
                    _say(f"prm: {sequence} {method}: no study {name} on {tune.safe_url(url)}; the given options "
                         "are used", err=True)
                continue
            _say(f"prm: {sequence} {method}: best of study {study.name} (trial {study.best.number} of "
                 f"{len(study.complete)} by validation Acc): {_params_text(study.best.params, ', ')}", err=True)
            found[(sequence, method)] = study
    return found


def _tuned_config(cfg: RunConfig, study: Any) -> RunConfig:
    """``cfg`` with the study's best parameters, or one error line: a storage is untrusted
    input, and a parameter that is not a number (a string, None, 10**400) or out of range
    must not become a traceback."""
    from prm import tune

    if study.attrs.get("setup") != tune.setup_key(cfg):
        _fail(f"study {study.name} tuned {cfg.method} with other training options than this command's; give "
              "compare the options given to tune (sequence length, width, epochs ...)")
    best = study.best
    try:
        return tune.apply_params(cfg, best.params)
    except (TypeError, ValueError, OverflowError) as exc:  # ConfigError is a ValueError
        reason = " ".join(str(exc).split())[:200]
        _fail(f"study {study.name}: the parameters of its best trial {best.number} ({_params_text(best.params, ', ')}) "
              f"cannot be used: {reason}")


def _compare_shared(args: argparse.Namespace, configs: dict, *, methods: list[str], tuned: dict) -> int:
    """``compare --study``: the grid as a study on the storage, shared by every machine that
    runs the same command; the table comes from the storage, whoever trained each cell."""
    from tqdm import tqdm

    from prm import tune

    url = _storage(args)
    out_dir = Path(args.out_dir or f"runs/compare/{args.study}")
    _check_out(out_dir, "--out-dir", may_hold_files=True)  # the default one too, before the storage is opened
    bar = tqdm(total=len(configs), unit="cell", disable=args.quiet, dynamic_ncols=True)

    sequences: dict[tuple, Any] = {}  # each cell's sequence, built once for its families and its run

    def sequence_of(config: RunConfig) -> Any:
        key = (config.sequence, config.seed, config.n_tasks, config.data_dir, config.shots)
        if key not in sequences:
            sequences[key] = _sequence(config)
        return sequences[key]

    def train(config: RunConfig, run_dir: Path, number: int) -> Any:
        bar.set_postfix_str(f"trial {number}: {config.sequence} {config.method} seed {config.seed}")
        return _train_recorded(config, run_dir, compile=args.compile, sequence=sequence_of(config))

    def after(study: Any) -> None:
        bar.update(len({tune.cell_of(t.params) for t in study.complete}) - bar.n)

    try:
        with bar:
            study = tune.compare_grid(configs=configs, url=url, study_name=args.study, out_dir=out_dir, train=train,
                                      families=lambda c: [t.family for t in sequence_of(c).tasks], after=after)
    except KeyboardInterrupt:
        _say(f"prm: interrupted; the cells finished so far are kept in study {args.study} on {tune.safe_url(url)}; the same "
             "command trains the rest", err=True)
        return 130
    results: Results = {}
    for t in study.complete:
        results[tune.cell_of(t.params)] = (t.test_matrix, t.seconds or 0.0, list(t.families))
    missing = len(configs) - len(results)
    if missing:
        _say(f"prm: {missing} of {len(configs)} cells are still running on other workers; the table holds "
             "the finished ones (run the command again later for all)", err=True)
    _print_tables(args, results, methods=methods, tuned=tuned)
    return 0


def _sequence(config: RunConfig) -> Any:
    """The task sequence a config trains on."""
    return make_sequence(config.sequence, seed=config.seed, n_tasks=config.n_tasks, data_dir=config.data_dir,
                         shots=config.shots)


def _train_recorded(config: RunConfig, run_dir: Path, *, compile: str, sequence: Any,
                    emit: Callable[[Any], None] | None = None) -> Any:
    """One trial's run, recorded into ``run_dir`` (summary and projections written at its end)."""
    from prm.engine import train_sequence
    from prm.runs import RunWriter

    writer = RunWriter(run_dir, config=config)

    def both(event: Any) -> None:
        writer(event)
        if emit:
            emit(event)

    return train_sequence(config, emit=both, sequence=sequence, compile=compile)


# ----------------------------------------------------------------------------- tune


def cmd_tune(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from prm import tune

    _check_sequence(args.sequence)
    _check_method(args.method)
    if args.trials < 1:
        _fail(f"--trials must be >= 1, got {args.trials}")
    cfg = _config(args, sequence=args.sequence, method=args.method, seed=args.seed)
    # trials keep PCA only and no checkpoints: 20 trials would otherwise hold 20 what-if
    # checkpoint sets; the explorer computes UMAP when a trial's run is opened
    cfg = cfg.replace(record=dataclasses.replace(cfg.record, projections=("pca",), checkpoints=False))
    name = args.study or tune.default_study(args.sequence, args.method)
    url = _storage(args)
    runs_dir = Path(args.runs_dir) / name
    _check_out(runs_dir, "--runs-dir", may_hold_files=True)  # before the storage is opened or made
    seq = _sequence(cfg)
    if args.fail_running:
        _say(f"prm: {tune.fail_running(url, name)} running trial(s) of {name} marked failed", err=True)
    bar = tqdm(total=args.trials, unit="trial", disable=args.quiet, dynamic_ncols=True)

    def train(config: RunConfig, run_dir: Path, number: int) -> Any:
        def show(event: Any) -> None:
            if event.type == "task_start":
                bar.set_postfix_str(f"trial {number}: task {event.task + 1}/{len(seq.tasks)}" + best)
        return _train_recorded(config, run_dir, compile=args.compile, sequence=seq, emit=show)

    best = ""

    def after(study: Any) -> None:
        nonlocal best
        if study.best is not None:
            best = f", best val Acc {_fmt(study.best.val_acc)} (trial {study.best.number})"
        bar.update(min(len(study.complete), args.trials) - bar.n)
        bar.set_postfix_str(best.lstrip(", "))

    try:
        with bar:
            study = tune.tune(config=cfg, url=url, study_name=name, trials=args.trials, runs_dir=runs_dir,
                              train=train, families=[t.family for t in seq.tasks], after=after)
    except KeyboardInterrupt:
        _say(f"prm: interrupted; the trials finished so far are kept in study {name} on {tune.safe_url(url)}; the same command "
             "resumes it", err=True)
        return 130
    _print_study(study, url=url, target=args.trials)
    return 0


def _print_study(study: Any, *, url: str, target: int) -> None:
    from prm import tune

    done = study.complete
    lines = [f"study {study.name} on {tune.safe_url(url)}: {len(done)} of {target} trials complete "
             f"({_shown(study.method)} on {_shown(study.sequence)}, seed {_shown(study.attrs.get('seed'))})"]
    running = sum(t.state == "running" for t in study.trials)
    if running:
        lines.append(f"{running} trial(s) still running on other workers")
    best = study.best
    if best is not None:
        lines.append(f"best trial {best.number} (chosen by validation Acc): val Acc {_fmt(best.val_acc, 4)}, "
                     f"test Acc {_fmt(best.test_acc, 4)}")
        lines.append("  " + _params_text(best.params, "  "))
        folder = tune.run_folder(url, best)
        recorded = "not recorded" if best.run_dir is None else f"{_shown(best.run_dir, 300)} (on {_shown(best.host)})"
        lines.append(f"  run folder: {folder if folder else recorded}")
    lines.append(f"PS (std of test Acc over the {len(done)} complete trials): {_fmt(study.ps, 4)}")
    _say(*lines)


def cmd_table(args: argparse.Namespace) -> int:
    """compare's tables from recorded runs: finished runs only, keyed by (sequence, method, seed),
    the method as :func:`prm.paper.method_label` names it; ``--paper``: the paper's layout."""
    from prm import paper
    from prm.runs import RunFormatError, load_run

    if args.paper and args.families:
        _fail("--families is for the plain table; --paper prints the paper's layout")
    results: Results = {}
    for folder in args.runs:
        try:
            run = load_run(Path(folder))
        except RunFormatError as exc:
            _say(f"prm: skipped {folder}: {exc}", err=True)
            continue
        if run.status != "finished":
            _say(f"prm: skipped {folder}: status {run.status}", err=True)
            continue
        cfg = run.config
        key = (run.state.sequence, paper.method_label(cfg), cfg.seed)
        if key in results:
            _fail(f"{folder}: a second run of {key[0]} {key[1]} seed {key[2]}; give each once")
        results[key] = (run.state.accuracy_matrix("test"), run.state.end.seconds or 0.0,
                        [t["family"] for t in run.state.tasks])
    if not results:
        _fail("no finished run among the folders given")
    rows = compare_table(results)
    ps = None
    if args.storage is not None:  # PS per (sequence, method), as compare --tuned and the Compare view give it
        from prm.studies import tuned_studies

        ps = {pair: study.ps for pair, study in tuned_studies(args.storage).items()}
        for r in rows:
            r["ps"] = ps.get((r["sequence"], r["method"]))
    if args.paper:
        _say_paper(rows, ps, storage=args.storage, markdown=args.markdown)
        return 0
    _say_tables(rows, family_table(results) if args.families else None, markdown=args.markdown)
    return 0


def _say_paper(rows: list[dict[str, Any]], ps: dict | None, *, storage: str | None, markdown: bool) -> None:
    """``table --paper``: a block per slot of the paper's table (:mod:`prm.paper`)."""
    from prm import paper
    from prm.storages import safe_url

    if not [r for r in rows if paper.slot_of(r["sequence"])]:
        _fail(f"no run of a sequence in the paper's table among the folders given (its analogues: "
              f"{', '.join(s.analogue for s in paper.SLOTS)}; or the paper's own sequences)")
    for sequence in paper.unplaced(rows):
        _say(f"prm: left out {sequence}: not a sequence of the paper's table", err=True)
    for block in paper.blocks(rows, ps=ps):
        table = _layout(block.head, block.body, markdown=markdown).split("\n")
        _say(f"**{block.title}**" if markdown else block.title, *([""] if markdown else []), *table, "")
    _say(*paper.notes(storage=storage and safe_url(storage)))


# ----------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="prm", description="PRM / HAT continual-learning engine")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    parser.commands = sub.choices  # name -> sub-command parser, for main's error messages
    seq_help = "; ".join(f"{k}: {v}" for k, v in SEQUENCES.items())
    method_help = "; ".join(f"{k}: {v}" for k, v in METHOD_HELP.items())

    run = sub.add_parser("run", help="train one method on one sequence and record the run")
    run.add_argument("--sequence", default="digits-mixed", help=f"[%(default)s] {seq_help}")
    run.add_argument("--method", default="prm", help=f"[%(default)s] {method_help}")
    run.add_argument("--seed", type=int, default=0, help="[%(default)s]")
    run.add_argument("--out", type=_path, default=None, help="run folder to create [runs/SEQUENCE-METHOD-sSEED-TIME]")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_training_options(run)
    run.set_defaults(func=cmd_run)

    comp = sub.add_parser("compare", help="Acc/BWT/FWT/CT table over methods and seeds")
    comp.add_argument("--sequence", type=_name_list("sequence"), default="digits-mixed",
                      help="one or more sequences, comma-separated, each once [%(default)s]")
    comp.add_argument("--methods", type=_name_list("method"), default="prm,hat,ncl,stl",
                      help="comma-separated, each once [%(default)s]")
    comp.add_argument("--seeds", type=_int_list, default=[0, 1, 2], help="comma-separated, each once [0,1,2]")
    comp.add_argument("--out-dir", type=_path, default=None, help="also record every run under this folder")
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
    comp.add_argument("--storage", type=_path, default=None,
                      help="Optuna storage: sqlite:///file.db, journal:///file.log or postgresql://user@host/db "
                           "[sqlite:///runs/optuna.db]")
    comp.add_argument("--study", type=_study, default=None,
                      help="share the comparison as this study on --storage: the same command on several machines "
                           "trains each cell once, and the table comes from the storage (docs/tuning.md)")
    _add_training_options(comp)
    comp.set_defaults(func=cmd_compare)

    tun = sub.add_parser("tune", help="Optuna TPE study of one method's hyper-parameters; prints the best and PS")
    tun.add_argument("--sequence", default="digits-mixed-few", help=f"[%(default)s] {seq_help}")
    tun.add_argument("--method", default="prm", help=f"[%(default)s] {method_help}")
    tun.add_argument("--trials", type=int, default=20,
                     help="complete trials the study should hold, counting earlier commands and other workers "
                          "[%(default)s]")
    tun.add_argument("--seed", type=int, default=0, help="the runs' seed and the sampler's [%(default)s]")
    tun.add_argument("--storage", type=_path, default=None,
                     help="Optuna storage: sqlite:///file.db, journal:///file.log (a shared folder) or "
                          "postgresql://user@host/db [sqlite:///runs/optuna.db]")
    tun.add_argument("--study", type=_study, default=None,
                     help="study name, also the folder of its trials under --runs-dir [tune-SEQUENCE-METHOD]")
    tun.add_argument("--runs-dir", type=_path, default="runs/tune", help="trial run folders go to RUNS_DIR/STUDY/trial-NNNN "
                                                             "[%(default)s]")
    tun.add_argument("--fail-running", action="store_true",
                     help="first mark the study's running trials failed (after a worker was killed on a journal "
                          "storage, which keeps no heartbeat; only when no other worker is running)")
    tun.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_training_options(tun)
    tun.set_defaults(func=cmd_tune)

    table = sub.add_parser("table", help="compare's tables from recorded run folders (e.g. compare --out-dir)")
    table.add_argument("runs", type=_path, nargs="+", help="run folders")
    table.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    table.add_argument("--families", action="store_true", help="also print the per-family table")
    table.add_argument("--paper", action="store_true",
                       help="the paper's layout: per slot #1-#6, the runs of its bundled analogue (or of the paper's "
                            "own sequence) beside the paper's published numbers (docs/results.md)")
    table.add_argument("--storage", type=_path, default=None,
                       help="Optuna storage whose tune studies give a PS column (sqlite:///file.db ...)")
    table.set_defaults(func=cmd_table)

    show = sub.add_parser("show", help="summary of a recorded run")
    show.add_argument("run", type=_path, help="run folder")
    show.set_defaults(func=cmd_show)

    what = sub.add_parser("whatif", help="re-run a recorded run from one task with DTD's decision replaced")
    what.add_argument("run", type=_path, help="the parent run folder (recorded with checkpoints, method prm, prm+ or an ablation)")
    what.add_argument("--task", type=int, required=True, help="the task (1-based, 2 or more) whose decision is replaced")
    what.add_argument("--similar", type=_task_list, required=True,
                      help="earlier tasks (1-based, comma-separated) to call similar in every masked layer; "
                           "every other earlier task is dissimilar; \"\" or none: all dissimilar")
    what.add_argument("--out", type=_path, required=True, help="the child run folder to create")
    what.add_argument("--quiet", action="store_true", help="no progress bar")
    what.set_defaults(func=cmd_whatif)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the sub-command, whose --help lists the options it takes
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at exit
        return code
    except (ConfigError, DataError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:  # before or after training (cmd_run handles it during training)
        _say("prm: interrupted", err=True)
        return 130
    except BrokenPipeError:
        # The reader left (``| head -1``): nothing more can be shown. Point stdout at devnull
        # so the interpreter's final flush cannot fail again, and exit as SIGPIPE would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
