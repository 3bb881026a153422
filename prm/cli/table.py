"""``prm table RUN...``: compare's tables from recorded run folders (``compare --out-dir``,
the bundled samples); ``--paper`` lays them out beside the paper's Tables 2-5."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from prm.cli.common import fail, path, say
from prm.cli.reports import Results, compare_table, family_table, layout, say_tables


def add_parser(sub: argparse._SubParsersAction) -> None:
    table = sub.add_parser("table", help="compare's tables from recorded run folders (e.g. compare --out-dir)")
    table.add_argument("runs", type=path, nargs="+", help="run folders")
    table.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    table.add_argument("--families", action="store_true", help="also print the per-family table")
    table.add_argument("--paper", action="store_true",
                       help="the paper's layout: per slot #1-#6, the runs of its bundled analogue (or of the paper's "
                            "own sequence) beside the paper's published numbers (docs/results.md)")
    table.add_argument("--storage", type=path, default=None,
                       help="Optuna storage whose tune studies give a PS column (sqlite:///file.db ...)")
    table.set_defaults(func=cmd_table)


def cmd_table(args: argparse.Namespace) -> int:
    """compare's tables from recorded runs: finished runs only, keyed by (sequence, method, seed),
    the method as :func:`prm.paper.method_label` names it; ``--paper``: the paper's layout."""
    if args.paper and args.families:
        fail("--families is for the plain table; --paper prints the paper's layout")
    results = _recorded(args.runs)
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
    say_tables(rows, family_table(results) if args.families else None, markdown=args.markdown)
    return 0


def _recorded(folders: list[str]) -> Results:
    """The finished runs among ``folders`` (any other skipped with a line on stderr), each
    once; one error line when none is left."""
    from prm import paper
    from prm.run import RunFormatError, load_run

    results: Results = {}
    for folder in folders:
        try:
            run = load_run(Path(folder))
        except RunFormatError as exc:
            say(f"prm: skipped {folder}: {exc}", err=True)
            continue
        if run.status != "finished":
            say(f"prm: skipped {folder}: status {run.status}", err=True)
            continue
        cfg = run.config
        key = (run.state.sequence, paper.method_label(cfg), cfg.seed)
        if key in results:
            fail(f"{folder}: a second run of {key[0]} {key[1]} seed {key[2]}; give each once")
        results[key] = (run.state.accuracy_matrix("test"), run.state.end.seconds or 0.0,
                        [t["family"] for t in run.state.tasks])
    if not results:
        fail("no finished run among the folders given")
    return results


def _say_paper(rows: list[dict[str, Any]], ps: dict | None, *, storage: str | None, markdown: bool) -> None:
    """``table --paper``: a block per slot of the paper's table (:mod:`prm.paper`)."""
    from prm import paper
    from prm.storages import safe_url

    if not [r for r in rows if paper.slot_of(r["sequence"])]:
        fail(f"no run of a sequence in the paper's table among the folders given (its analogues: "
             f"{', '.join(s.analogue for s in paper.SLOTS)}; or the paper's own sequences)")
    for sequence in paper.unplaced(rows):
        say(f"prm: left out {sequence}: not a sequence of the paper's table", err=True)
    for block in paper.blocks(rows, ps=ps):
        table = layout(block.head, block.body, markdown=markdown).split("\n")
        say(f"**{block.title}**" if markdown else block.title, *([""] if markdown else []), *table, "")
    say(*paper.notes(storage=storage and safe_url(storage)))
