"""``prm show RUN``: a recorded run's summary, accuracy matrix and similarity calls, read from
its event log (the record itself; summary.json is only a cache for the explorer's picker)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from prm.cli.common import fail, fmt, path, say
from prm.text import terminal


def add_parser(sub: argparse._SubParsersAction) -> None:
    show = sub.add_parser("show", help="summary of a recorded run")
    show.add_argument("run", type=path, help="run folder")
    show.set_defaults(func=cmd_show)


def cmd_show(args: argparse.Namespace) -> int:
    from prm.run import RunFormatError

    try:
        print_summary(Path(args.run))
    except RunFormatError as exc:
        fail(str(exc))
    except BrokenPipeError:
        raise
    except Exception as exc:  # show reads nothing but the folder: any failure means it is damaged
        fail(f"{args.run}: cannot show this run, it is damaged ({type(exc).__name__}: {exc})")
    return 0


def print_summary(folder: Path) -> None:
    """Print a run's summary; built whole first, so a damaged run prints nothing but the error."""
    from prm.run import load_run, summarise

    run = load_run(folder)
    s = summarise(run)  # from the event log, the record itself; summary.json is only a cache for the picker
    lines: list[str] = []
    lines.append(f"run      {run.path}")
    lines.append(f"status   {run.status}   sequence {s['sequence']}   method {s['method']}   seed {s['seed']}")
    lines.append(f"tasks    {s['tasks_done']}/{s['n_tasks']} learnt   Acc {fmt(s['acc'])}   BWT {fmt(s['bwt'])}   "
                 f"CT {fmt(s['seconds'], 1)} s   phases " +
                 ", ".join(f"{k} {v:.1f} s" for k, v in s["phase_seconds"].items()))
    R = run.state.accuracy_matrix("test")
    names = [t["name"] for t in run.state.tasks]
    if run.state.tasks_done:
        lines.append("accuracy matrix R[j, i] (row: after learning task Tj; column: tested on task Ti)")
        for j in range(run.state.tasks_done):
            lines.append(f"  T{j + 1:<3} {terminal(names[j])[:18]:<18} "
                         + " ".join(fmt(v, 2).rjust(4) for v in R[j, : j + 1]))
    lines += _similarity_lines(run.state)
    for warning in filter(None, [run.status_note, *run.warnings]):
        lines.append(f"warning: {warning}")
    say(*lines)


def _similarity_lines(state: Any) -> list[str]:
    """DTD's decisions (PRM and its ablations) and CAT's transfer tests, one line per task."""
    lines: list[str] = []
    if state.dtd:
        lines.append("DTD: X-means clusters k and the earlier tasks protected as dissimilar, per masked layer "
                     "(the rule or ablation that decided instead of X-means in brackets)")
    for task, record in sorted(state.dtd.items()):
        decided_by = "" if record.source == "xmeans" else f" ({record.source})"
        parts = [f"layer {l}: k={layer['xmeans']['k']} dissimilar=[{', '.join(f'T{i + 1}' for i in layer['dissimilar'])}]"
                 + decided_by + (" (undecided)" if layer.get("undecided") and record.source == "xmeans" else "")
                 for l, layer in enumerate(record.layers)]
        lines.append(f"  T{task + 1:<3} " + "; ".join(parts))
    if state.transfer:
        lines.append("CAT: validation accuracy of each earlier task's transfer network against the reference "
                     "network; similar when higher")
    for task, test in sorted(state.transfer.items()):
        accs = " ".join(f"T{j + 1} {a:.2f}{'*' if j in test.similar else ''}" for j, a in enumerate(test.transfer_acc))
        lines.append(f"  T{task + 1:<3} reference {test.reference_acc:.2f}; {accs} "
                     f"(similar: {', '.join(f'T{j + 1}' for j in test.similar) or 'none'})")
    return lines
