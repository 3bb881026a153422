"""How ``run`` and ``whatif`` record a run into its folder: the writer opened only once every
check has passed, training under a progress bar, then the summary, then the projections;
and what Ctrl-C or a full disk leaves, said in words that agree with what the folder holds.

A run that fails while being written keeps every whole record it wrote and loads as
'failed' (one that recorded nothing is removed: only the files it wrote). Ctrl-C exits with
130, the run so far kept as 'stopped'.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prm.cli.common import fail, say
from prm.cli.show import print_summary


def restore_ctrl_c() -> None:
    """Let SIGINT stop this run (as KeyboardInterrupt) even when the process was started with
    SIGINT ignored: a shell without job control starts a background command so (``cmd &`` in
    a script), Python then installs no handler of its own, and Ctrl-C or the explorer's Stop
    button (it sends SIGINT) would leave the run training."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def open_writer(out: Path, **kwargs: Any) -> Any:
    """The run folder's writer (``RunWriter(out, **kwargs)``), or one ``prm: error:`` line; a
    writer that fails half-way (a full disk, Ctrl-C) has removed what it made. It does not
    finalize: :func:`record` writes the summary and the projections after it."""
    from prm.run import RunWriter

    try:
        return RunWriter(out, finalize=False, **kwargs)
    except FileExistsError as exc:  # appeared since check_out
        fail(str(exc))
    except OSError as exc:
        fail(f"could not create the run folder {out}: {exc}")


def record(out: Path, writer: Any, *, tasks: int, quiet: bool, train: Callable[[Callable[[Any], None]], Any]) -> int:
    """Train through ``train(emit)`` into ``writer`` (made with ``finalize=False``) with a
    progress bar, and end as ``run`` and ``whatif`` both do: exit 130 on Ctrl-C with what was
    left, one error line on a write failure (:func:`_settle_failed_write`), else the
    summary, then the projections, then 0 for a finished run.

    The run is complete (``run_end`` line, summary.json, the summary printed) before UMAP
    starts: its first fit in a process may compile for seconds, under its own progress line.
    """
    from tqdm import tqdm

    from prm.run import write_summary

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
        say(_interrupted(out, writer), err=True)
        return 130
    except OSError as exc:  # a full disk, a folder removed under us ...
        if isinstance(exc, BrokenPipeError):
            raise
        fail(f"could not write the run {out}: {exc}; {_settle_failed_write(out, writer, exc)}")
    print_summary(out)
    if not _write_projections(out, writer, quiet=quiet):
        return 130
    return 0 if result.status == "finished" else 1


def _show_progress(bar: Any, event: Any) -> None:
    """The progress bar of ``run`` and ``whatif``: the latest epoch, one step per task."""
    if event.type == "epoch":
        bar.set_postfix_str(f"task {event.task + 1} {event.phase} epoch {event.epoch + 1} "
                            f"val_acc {event.val_acc:.3f}", refresh=False)
    elif event.type == "task_end":
        bar.update(1)


class _Projecting:
    """The projections' progress line on stderr (made at the first step, when the number of
    projections is known) and the Ctrl-C that landed in one of llvmlite's ctypes callbacks
    while numba compiled: ctypes drops it (reports it to ``sys.unraisablehook``), so it is
    noted there and raised again between fits, where it still stops the run before the file
    is written."""

    def __init__(self, *, quiet: bool) -> None:
        self.quiet = quiet
        self.bars: list[Any] = []
        self.dropped: list[KeyboardInterrupt] = []
        self.previous_hook = sys.unraisablehook

    def note_dropped(self, unraisable: Any) -> None:  # where ctypes reports an exception it drops
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            self.dropped.append(unraisable.exc_value)
        else:
            self.previous_hook(unraisable)

    def progress(self, done: int, total: int, step: str) -> None:
        from tqdm import tqdm

        if self.dropped:
            raise KeyboardInterrupt
        if not self.bars:
            self.bars.append(tqdm(total=total, desc="projections", unit="fit", disable=self.quiet,
                                  dynamic_ncols=True, leave=False))
        self.bars[0].update(done - self.bars[0].n)
        self.bars[0].set_postfix_str(step)

    def __enter__(self) -> _Projecting:
        sys.unraisablehook = self.note_dropped
        return self

    def __exit__(self, *exc: Any) -> None:
        sys.unraisablehook = self.previous_hook
        for bar in self.bars:
            bar.close()


def _write_projections(out: Path, writer: Any, *, quiet: bool) -> bool:
    """The run's projections, after its summary, with their own progress line on stderr and
    the seconds they took; False after Ctrl-C (said in one line, the run kept as it is).

    The run is already complete, so nothing here changes its status: a full disk is one error
    line as anywhere else (exit 2, the run kept), and a projection that fails is a warning,
    since the explorer computes missing projections when it opens the run.
    """
    from prm.run import write_projections

    started = time.perf_counter()
    try:
        with _Projecting(quiet=quiet) as projecting:
            count = write_projections(out, progress=projecting.progress)
    except KeyboardInterrupt:
        say(_interrupted(out, writer), err=True)
        return False
    except OSError as exc:
        fail(f"could not write the run {out}: {exc}; {_settle_failed_write(out, writer, exc)}")
    except Exception as exc:  # UMAP or numba failing: the run stands, the explorer tries again
        say(f"prm: warning: projections failed ({type(exc).__name__}: {str(exc)[:200]}); the run finished "
            f"and is saved in {out}; the explorer computes projections when it opens the run", err=True)
        return True
    if count and not quiet:
        say(f"projections: {count} in {time.perf_counter() - started:.1f} s, in {out / 'projections.npz'}",
            err=True)
    return True


def _interrupted(out: Path, writer: Any) -> str:
    """What Ctrl-C left, in words that agree with what the folder holds.

    Once training finished, :func:`record` writes the summary, prints it and then computes the
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
