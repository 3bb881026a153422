"""Command line: ``python -m prm run|compare|show``.

    python -m prm run --sequence digits-mixed --method prm --seed 0 --out runs/my-run
    python -m prm compare --sequence digits-mixed --methods prm,hat,ncl,stl --seeds 0,1,2
    python -m prm show runs/my-run

A user mistake (unknown sequence or method, impossible number, existing output folder)
prints one line starting with ``prm: error:`` and exits with status 2.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from prm.config import METHOD_HELP, METHODS, PRESETS, ConfigError, RunConfig, preset
from prm.data import DATA_ENV, SEQUENCES, DataError, make_sequence


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one clear line, not the whole usage block
        self.exit(2, f"prm: error: {message} (see 'python -m prm {self.prog.split()[-1]} --help')\n")


def _fail(message: str) -> None:
    print(f"prm: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    return values


def _add_training_options(p: argparse.ArgumentParser) -> None:
    d = RunConfig()
    g = p.add_argument_group("model and training (unset options come from --preset; defaults in brackets)")
    g.add_argument("--preset", default="default", choices=list(PRESETS),
                   help="default: sized for the bundled data; paper: the PRM paper's set-up "
                        "(2000 units, lr 0.025 to 0.001, batch 64) [%(default)s]")
    g.add_argument("--data-dir", default=None,
                   help="folder with the paper's data sets (EMNIST, CIFAR-100 binary, LEAF); default $PRM_DATA")
    g.add_argument("--n-tasks", type=int, default=None, help="number of tasks [the sequence's default]")
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
    g.add_argument("--dtd-epochs", type=int, help=f"PRM: max epochs of DTD's 2nd optimisation [{d.prm.dtd_epochs}]")
    g.add_argument("--head-epochs", type=int, help=f"PRM: epochs of DTD's 1st optimisation [{d.prm.head_epochs}]")
    g.add_argument("--no-2so", action="store_true", help="PRM: DTD without the 1st optimisation (paper's 'w/o 2SO')")
    g.add_argument("--reg-mask", choices=("accumulated", "relaxed"),
                   help=f"PRM: mask the sparsity regulariser treats as used in LwPRM [{d.prm.reg_mask}]")
    g.add_argument("--ewc-lambda", type=float, help=f"EWC penalty strength [{d.ewc_lambda}]")
    g.add_argument("--no-umap", action="store_true", help="store only PCA projections (skips UMAP's compile at run end)")
    g.add_argument("--device", default="cpu", help="cpu or cuda [%(default)s]")


_OVERRIDES = {  # CLI option -> (config section, field)
    "epochs": ("optim", "max_epochs"), "lr": ("optim", "lr"), "batch_size": ("optim", "batch_size"),
    "patience": ("optim", "patience"), "lamb": ("hat", "lamb"), "smax": ("hat", "smax"),
    "dropout": ("model", "hidden_dropout"), "dtd_epochs": ("prm", "dtd_epochs"),
    "head_epochs": ("prm", "head_epochs"), "reg_mask": ("prm", "reg_mask"),
}


def _config(args: argparse.Namespace, *, sequence: str, method: str, seed: int) -> RunConfig:
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            _fail(f"--device {args.device}: no CUDA device is available on this machine")
    base = preset(args.preset).to_dict()
    for option, (section, name) in _OVERRIDES.items():
        if getattr(args, option) is not None:
            base[section][name] = getattr(args, option)
    if args.width is not None or args.layers is not None:
        width = args.width if args.width is not None else base["model"]["hidden"][0]
        layers = args.layers if args.layers is not None else len(base["model"]["hidden"])
        if layers < 1:
            _fail(f"--layers must be >= 1, got {layers}")
        base["model"]["hidden"] = [width] * layers
    base["optim"]["lr_min"] = min(base["optim"]["lr_min"], base["optim"]["lr"])
    if args.no_2so:
        base["prm"]["two_stage"] = False
    if args.no_umap:
        base["record"]["projections"] = ["pca"]
    if args.ewc_lambda is not None:
        base["ewc_lambda"] = args.ewc_lambda
    data_dir = args.data_dir or os.environ.get(DATA_ENV)
    return RunConfig.from_dict({**base, "sequence": sequence, "n_tasks": args.n_tasks, "method": method,
                                "seed": seed, "device": args.device, "data_dir": data_dir})


def _check_sequence(name: str) -> None:
    if name not in SEQUENCES:
        _fail(f"unknown sequence {name!r}; choose one of {', '.join(SEQUENCES)}")


def _check_method(name: str) -> None:
    if name not in METHODS:
        _fail(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")


# ----------------------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from prm.engine import train_sequence
    from prm.runs import RunWriter

    _check_sequence(args.sequence)
    _check_method(args.method)
    cfg = _config(args, sequence=args.sequence, method=args.method, seed=args.seed)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"runs/{args.sequence}-{args.method}-s{args.seed}-{stamp}")
    seq = make_sequence(cfg.sequence, seed=cfg.seed, n_tasks=cfg.n_tasks, data_dir=cfg.data_dir)
    try:
        writer = RunWriter(out, config=cfg)
    except FileExistsError as exc:
        _fail(str(exc))
    bar = tqdm(total=len(seq.tasks), unit="task", disable=args.quiet, dynamic_ncols=True)

    def emit(event: Any) -> None:
        writer(event)
        if event.type == "epoch":
            bar.set_postfix_str(f"task {event.task + 1} {event.phase} epoch {event.epoch + 1} "
                                f"val_acc {event.val_acc:.3f}", refresh=False)
        elif event.type == "task_end":
            bar.update(1)

    try:
        result = train_sequence(cfg, emit=emit, sequence=seq)
    except KeyboardInterrupt:
        bar.close()
        print(f"stopped: the run so far is saved in {out}", file=sys.stderr)
        return 130
    bar.close()
    _print_summary(out)
    return 0 if result.status == "finished" else 1


# ----------------------------------------------------------------------------- show


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def _print_summary(folder: Path) -> None:
    from prm.runs import load_run, summarise

    run = load_run(folder)
    s = run.summary or summarise(run)
    print(f"run      {run.path}")
    print(f"status   {run.status}   sequence {s['sequence']}   method {s['method']}   seed {s['seed']}")
    print(f"tasks    {s['tasks_done']}/{s['n_tasks']} learnt   Acc {_fmt(s['acc'])}   BWT {_fmt(s['bwt'])}   "
          f"CT {_fmt(s['seconds'], 1)} s   phases " +
          ", ".join(f"{k} {v:.1f} s" for k, v in s["phase_seconds"].items()))
    R = run.state.accuracy_matrix("test")
    names = [t["name"] for t in run.state.tasks]
    if run.state.tasks_done:
        print("accuracy matrix R[j, i] (row: after learning task Tj; column: tested on task Ti)")
        for j in range(run.state.tasks_done):
            print(f"  T{j + 1:<3} {names[j][:18]:<18} " + " ".join(_fmt(v, 2).rjust(4) for v in R[j, : j + 1]))
    if run.state.dtd:
        print("DTD: X-means clusters k and the earlier tasks protected as dissimilar, per masked layer")
    for task, record in sorted(run.state.dtd.items()):
        parts = [f"layer {l}: k={layer['xmeans']['k']} dissimilar=[{', '.join(f'T{i + 1}' for i in layer['dissimilar'])}]"
                 + (" (undecided)" if layer.get("undecided") else "")
                 for l, layer in enumerate(record["layers"])]
        print(f"  T{task + 1:<3} " + "; ".join(parts))
    for warning in run.warnings:
        print(f"warning: {warning}")


def cmd_show(args: argparse.Namespace) -> int:
    from prm.runs import RunFormatError

    try:
        _print_summary(Path(args.run))
    except RunFormatError as exc:
        _fail(str(exc))
    return 0


# ----------------------------------------------------------------------------- compare


def _compare_one(job: tuple[RunConfig, str | None]) -> tuple[np.ndarray, float]:
    """Train one run (in a worker process when --jobs > 1); return R and CT."""
    import torch

    from prm.engine import train_sequence
    from prm.runs import RunWriter

    torch.set_num_threads(1)
    cfg, out = job
    emit = RunWriter(out, config=cfg) if out else None
    result = train_sequence(cfg, emit=emit)
    return result.test_acc, result.seconds


def compare_table(results: dict[tuple[str, str, int], tuple[np.ndarray, float]]) -> list[dict[str, Any]]:
    """Acc, BWT, FWT (against STL of the same sequence and seed), CT: mean and std over seeds."""
    from prm import metrics

    rows = []
    for sequence in dict.fromkeys(k[0] for k in results):
        for method in dict.fromkeys(k[1] for k in results if k[0] == sequence):
            seeds = sorted(k[2] for k in results if k[:2] == (sequence, method))
            values: dict[str, list[float]] = {"acc": [], "bwt": [], "fwt": [], "ct": []}
            for seed in seeds:
                R, seconds = results[(sequence, method, seed)]
                values["acc"].append(metrics.average_accuracy(R))
                values["bwt"].append(metrics.backward_transfer(R))
                values["ct"].append(seconds)
                stl = results.get((sequence, "stl", seed))
                if stl is not None:
                    values["fwt"].append(metrics.forward_transfer(R, np.diag(stl[0])))
            row: dict[str, Any] = {"sequence": sequence, "method": method, "seeds": len(seeds)}
            for key, vals in values.items():
                row[key] = (float(np.mean(vals)), float(np.std(vals))) if vals else None
            rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]], *, markdown: bool) -> str:
    head = ["sequence", "method", "seeds", "Acc", "BWT", "FWT", "CT s"]

    def cell(v: tuple[float, float] | None, digits: int = 3) -> str:
        return "-" if v is None else f"{v[0]:.{digits}f} ± {v[1]:.{digits}f}"

    body = [[r["sequence"], r["method"], str(r["seeds"]), cell(r["acc"]), cell(r["bwt"]), cell(r["fwt"]),
             cell(r["ct"], 1)] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(b) + " |" for b in body])
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(line, widths)) for line in [head, *body])


def cmd_compare(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    sequences = [s for s in args.sequence.split(",") if s]
    methods = [m for m in args.methods.split(",") if m]
    for s in sequences:
        _check_sequence(s)
    for m in methods:
        _check_method(m)
    if args.jobs < 1:
        _fail(f"--jobs must be >= 1, got {args.jobs}")
    needed = methods if "stl" in methods else [*methods, "stl"]  # STL is FWT's reference
    jobs, keys = [], []
    for sequence in sequences:  # a missing data set fails here, before anything trains
        make_sequence(sequence, seed=args.seeds[0], n_tasks=args.n_tasks, data_dir=args.data_dir or None)
        for method in needed:
            for seed in args.seeds:
                cfg = _config(args, sequence=sequence, method=method, seed=seed)
                out = str(Path(args.out_dir) / f"{sequence}-{method}-s{seed}") if args.out_dir else None
                if out and Path(out).exists():
                    _fail(f"{out} already exists; choose another --out-dir")
                jobs.append((cfg, out))
                keys.append((sequence, method, seed))
    results = {}
    with tqdm(total=len(jobs), unit="run", disable=args.quiet) as bar:
        if args.jobs == 1:
            outputs = (_compare_one(job) for job in jobs)
            for key, output in zip(keys, outputs):
                results[key] = output
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=args.jobs) as pool:
                for key, output in zip(keys, pool.map(_compare_one, jobs)):
                    results[key] = output
                    bar.update(1)
    rows = [r for r in compare_table(results) if r["method"] in methods]
    print(format_table(rows, markdown=args.markdown))
    return 0


# ----------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="prm", description="PRM / HAT continual-learning engine")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    seq_help = "; ".join(f"{k}: {v}" for k, v in SEQUENCES.items())
    method_help = "; ".join(f"{k}: {v}" for k, v in METHOD_HELP.items())

    run = sub.add_parser("run", help="train one method on one sequence and record the run")
    run.add_argument("--sequence", default="digits-mixed", help=f"[%(default)s] {seq_help}")
    run.add_argument("--method", default="prm", help=f"[%(default)s] {method_help}")
    run.add_argument("--seed", type=int, default=0, help="[%(default)s]")
    run.add_argument("--out", default=None, help="run folder to create [runs/SEQUENCE-METHOD-sSEED-TIME]")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_training_options(run)
    run.set_defaults(func=cmd_run)

    comp = sub.add_parser("compare", help="Acc/BWT/FWT/CT table over methods and seeds")
    comp.add_argument("--sequence", default="digits-mixed", help="one or more sequences, comma-separated")
    comp.add_argument("--methods", default="prm,hat,ncl,stl", help="comma-separated [%(default)s]")
    comp.add_argument("--seeds", type=_int_list, default=[0, 1, 2], help="comma-separated [0,1,2]")
    comp.add_argument("--out-dir", default=None, help="also record every run under this folder")
    comp.add_argument("--jobs", type=int, default=1, help="runs in parallel processes [%(default)s]")
    comp.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    comp.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_training_options(comp)
    comp.set_defaults(func=cmd_compare)

    show = sub.add_parser("show", help="summary of a recorded run")
    show.add_argument("run", help="run folder")
    show.set_defaults(func=cmd_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DataError) as exc:
        _fail(str(exc))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
