"""Command line: ``python -m prm run|compare|tune|table|show|whatif``, one module per sub-command.

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
Every line printed, on stdout or stderr, passes through ``prm.text.terminal``
(:func:`prm.cli.common.say`): a name from a run folder, a data file or a storage cannot act
on the terminal or fail the print.

Each sub-command module registers its own parser (``add_parser``) and holds its command
(``cmd_*``); :mod:`prm.cli.options` holds the training options that run, compare and tune
share, :mod:`prm.cli.recording` how run and whatif write a run folder.
"""

from __future__ import annotations

import argparse
import os
import sys

from prm.cli import compare, run, show, table, tune, whatif
from prm.cli.common import Parser, fail, say
from prm.config import ConfigError
from prm.data import DataError


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="prm", description="PRM / HAT continual-learning engine")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    parser.commands = sub.choices  # name -> sub-command parser, for main's error messages
    for command in (run, compare, tune, table, show, whatif):  # the order of --help
        command.add_parser(sub)
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
        fail(str(exc))
    except KeyboardInterrupt:  # before or after training (cmd_run handles it during training)
        say("prm: interrupted", err=True)
        return 130
    except BrokenPipeError:
        # The reader left (``| head -1``): nothing more can be shown. Point stdout at devnull
        # so the interpreter's final flush cannot fail again, and exit as SIGPIPE would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    return 0
