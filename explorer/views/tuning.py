"""Tuning: the hyper-parameter studies of an Optuna storage, their PS, and each trial's run.

Storages are read only through ``prm.tune``'s reading functions (``read_storage`` underneath),
which never write: a mistyped path, a file that is no storage, a device or a FIFO is reported
in one line and left as it was; a trial that cannot be read is shown unreadable, with why.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import streamlit as st

from explorer import catalog
from explorer import state as keys
from explorer.figures import tuning as fig
from explorer.figures.common import md
from explorer.views.common import chart, goto, how_to_read, read_help, table
from prm import tune
from prm.run import list_runs

BUNDLED = catalog.SAMPLES / "tuning" / "optuna.db"
"""The sample study shipped with the repository (absent until one is generated)."""
SERVER_TTL = 30
"""Seconds a server storage's (PostgreSQL) reading is reused: it has no file whose time says it changed."""

HELP = read_help("tuning")
WIDTHS = {"run folder": st.column_config.TextColumn(width="medium"), "note": st.column_config.TextColumn(width="medium")}
"""Long texts get a fixed width (the whole text in the CSV), so that the run folders
tab fits an 800 px window rather than scrolling sideways."""


def absolute(url: str) -> str:
    """``url`` with a relative SQLite or journal path made absolute against the repository
    root, as the runs folder is: the same URL as the CLI's, wherever Streamlit was started."""
    url = url.strip()
    path = tune.file_of(url)
    if path is None or path.is_absolute() or str(path) == ".":  # a server, an absolute path, or no path
        return url
    scheme = url.partition("://")[0]
    return f"{scheme}:///{catalog.ROOT / path}"


def file_url(path: Path) -> str:
    """The SQLite URL of ``path``, absolute: one storage has one URL (and one cache entry)."""
    return f"sqlite:///{path.resolve()}"


def known_storages(root: Path) -> dict[str, str]:
    """URL -> label of the storages offered without typing, those that exist: the runs
    folders' ``optuna.db`` (the folder shown, then the default one, where the CLI writes),
    then the bundled sample's."""
    try:
        default = keys.runs_root(keys.DEFAULT_RUNS_DIR, catalog.ROOT) / "optuna.db"
    except ValueError:  # $PRM_EXPLORER_RUNS names a home folder this machine does not have
        default = None
    found = {}
    for where, path in (("your runs folder", root / "optuna.db"), ("default runs folder", default),
                        ("bundled sample", BUNDLED)):
        if path is not None and path.is_file():
            found.setdefault(file_url(path), f"{where}: {catalog.key_of(path)}")
    return found


def stamp(url: str) -> tuple:
    """A cache key that changes when the storage may have: the file's (and SQLite's side
    files') size and time, or for a server the current SERVER_TTL-second slot."""
    path = tune.file_of(url)
    if path is None:
        return ("server", int(time.time() // SERVER_TTL))
    parts = []
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-journal")):
        try:
            s = p.stat()
            parts.append((s.st_mtime_ns, s.st_size))
        except OSError:
            parts.append(None)
    return tuple(parts)


def _guarded(read):
    """``(read(), None)``, or ``(None, why)`` when the storage cannot be read. Anything a
    foreign file or a server can raise ends as one line here (tune raises StorageError for
    what it foresees; a damaged database can raise more), so no view fails on a storage."""
    try:
        return read(), None
    except tune.StorageError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"


@st.cache_data(max_entries=32, show_spinner=False)
def _names(url: str, key: tuple):  # noqa: ARG001 - key is the cache key (stamp)
    return _guarded(lambda: tune.study_names(url))


@st.cache_data(max_entries=32, show_spinner=False)
def _study(url: str, name: str, key: tuple):  # noqa: ARG001
    return _guarded(lambda: tune.load_study(url, name))


@st.cache_data(max_entries=32, show_spinner="Computing parameter importances (cached afterwards)…")
def _importances(url: str, name: str, key: tuple):  # noqa: ARG001
    return _guarded(lambda: tune.importances(url, name))


@st.cache_data(max_entries=16, show_spinner=False)
def _tuned(url: str, key: tuple):  # noqa: ARG001
    return _guarded(lambda: tune.tuned_studies(url))


def chosen_url() -> str | None:
    """The storage last shown in the Tuning view (kept while other tabs are open)."""
    return (st.session_state.get(keys.TUNING_CHOSEN) or (None, None))[0]


def tuned_pairs(root: Path) -> tuple[dict[tuple[str, str], tuple[tune.Study, str]], list[str]]:
    """Every tune study by (sequence, method) in the storages Compare looks at: the one
    chosen in Tuning first, then the known ones (:func:`known_storages`); of one pair, the
    first storage's study wins. Also one line per storage that could not be read."""
    known = known_storages(root)
    urls = list(dict.fromkeys(u for u in (chosen_url(), *known) if u))
    found: dict[tuple[str, str], tuple[tune.Study, str]] = {}
    problems = []
    for url in urls:
        where = known.get(url) or tune.safe_url(url)  # a server's URL may hold its password: never shown
        studies, error = _tuned(url, stamp(url))
        if error:
            problems.append(f"{where}: {error}")
            continue
        for pair, study in studies.items():
            found.setdefault(pair, (study, where))
    return found, problems


def _pick_storage(root: Path) -> str | None:
    known = known_storages(root)
    last = chosen_url()
    options = [*known, keys.OTHER_STORAGE]
    if st.session_state.get(keys.TUNING_STORAGE) not in options:  # first draw, or back from another tab
        st.session_state[keys.TUNING_STORAGE] = last if last in known else options[0] if last is None \
            else keys.OTHER_STORAGE
    pick = st.selectbox("Storage", options, key=keys.TUNING_STORAGE,
                        format_func=lambda u: known.get(u, "another storage URL…"),
                        help="the bundled sample study and the optuna.db of your runs folder when they exist, "
                             "or any storage URL")
    if pick != keys.OTHER_STORAGE:
        return pick
    if keys.TUNING_URL not in st.session_state and last is not None and last not in known:
        st.session_state[keys.TUNING_URL] = last  # back from another tab: the URL typed before
    typed = st.text_input("Storage URL", key=keys.TUNING_URL, placeholder="sqlite:///runs/optuna.db",
                          help="sqlite:///path.db (relative to the repository root), journal:///path.log or "
                               "postgresql://user@host/database; nothing is created where nothing exists")
    if not typed.strip():
        st.info("Type a storage URL, for instance sqlite:///runs/optuna.db, the CLI's default"
                + ("" if known else " (no known storage exists here yet: `python -m prm tune --help` makes one)")
                + ".")
        return None
    return absolute(typed)


def _pick_study(url: str, names: list[str]) -> str:
    last_url, last = st.session_state.get(keys.TUNING_CHOSEN) or (None, None)
    if st.session_state.get(keys.TUNING_STUDY) not in names:
        st.session_state[keys.TUNING_STUDY] = last if last_url == url and last in names else names[0]
    return st.selectbox("Study", names, key=keys.TUNING_STUDY, help="the studies this storage holds")


def _open(folder: Path) -> None:
    """Show a trial's run in the other views (a button callback, so it runs before the
    sidebar is drawn): the runs folder becomes the study's folder, where the picker lists the
    trial, the run is opened, the task falls back to the run's last one, and Overview opens."""
    st.session_state[keys.OPEN_RUNS_DIR] = catalog.key_of(folder.parent)
    st.session_state[keys.OPEN_RUN] = catalog.key_of(folder)
    st.session_state.pop(keys.TASK, None)
    st.query_params.pop(keys.TASK, None)
    goto(keys.OVERVIEW)


def _open_trial(study: tune.Study, local: dict[int, Path | None]) -> None:
    parents = {p.parent for p in local.values() if p is not None}
    listed = {catalog.resolved(p) for parent in parents for p in list_runs(parent)} - {None}  # what the picker lists
    openable = {n: p for n, p in local.items() if p is not None and catalog.resolved(p) in listed}
    if not openable:
        hosts = sorted({t.host for t in study.trials if t.host})
        st.caption("No trial's run folder is on this machine" + (f" (recorded on {md(', '.join(hosts))})" if hosts
                                                                  else "") +
                   ": copy the study's folder next to the storage file to open its runs here.")
        return
    best = study.best
    numbers = list(openable)
    if st.session_state.get(keys.TUNING_OPEN_TRIAL) not in numbers:
        st.session_state[keys.TUNING_OPEN_TRIAL] = best.number if best and best.number in openable else numbers[0]
    by_number = {t.number: t for t in study.trials}

    def label(n: int) -> str:
        t = by_number[n]
        acc = "" if t.val_acc is None else f" · val Acc {t.val_acc:.3f}"
        return f"trial {n}{' (best)' if best is not None and n == best.number else ''}{acc} · {t.state}"

    pick, button = st.columns([4, 1], vertical_alignment="bottom")
    number = pick.selectbox("Open a trial's run in the other views", numbers, key=keys.TUNING_OPEN_TRIAL,
                            format_func=label, help="trials whose run folder is on this machine")
    button.button("Open", key="tune-open", on_click=_open, args=(openable[number],), icon=":material/open_in_new:",
                  help="switches Your runs folder to the study's folder (the picker lists its trials) and opens "
                       "the run in Overview")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text)[:80] or "study"


def render(*, root: Path) -> None:
    url = _pick_storage(root)
    if url is None:
        how_to_read(HELP)
        return
    names, error = _names(url, stamp(url))
    if error:
        st.error(f"Cannot read this storage: {md(error)}")
        how_to_read(HELP)
        return
    if not names:
        st.info("This storage holds no study yet.")
        how_to_read(HELP)
        return
    name = _pick_study(url, names)
    study, error = _study(url, name, stamp(url))
    if error:
        st.error(f"Cannot read study {md(name)}: {md(error)}")
        how_to_read(HELP)
        return
    st.session_state[keys.TUNING_CHOSEN] = (url, name)
    st.markdown(fig.headline(study))
    if study.problems:
        st.warning("Parts of this study cannot be read and are left out (PS, the best trial and the charts count "
                   f"only what was read): {fig.problems_line(study)}")
    local = {t.number: tune.run_folder(url, t) for t in study.trials}
    st.markdown("**Trials** (val Acc is the objective; test Acc is reported, never optimised)")
    parts = fig.trials_parts(fig.trials_table(study, local))
    for tab, (part, frame) in zip(st.tabs([p.capitalize() for p in parts]), parts.items()):
        with tab:
            table(frame, key=f"tune-trials-{part}", name=f"trials-{part}-{_slug(name)}", column_config=WIDTHS)
    _open_trial(study, local)
    chart(fig.acc_figure(study), key="tune-acc", name=f"acc-{_slug(name)}")
    if study.kind == "compare":
        st.markdown("**Cells** of the comparison (sequence × method × seed)")
        table(fig.cells_table(study), key="tune-cells", name=f"cells-{_slug(name)}")
    else:
        st.markdown("**Parameter importances** for validation Acc")
        values, error = _importances(url, name, stamp(url))
        if error:
            st.warning(f"Optuna could not compute the importances: {md(error)}")
        else:
            chart(fig.importance_figure(values), key="tune-importances", name=f"importances-{_slug(name)}")
            if not values:
                st.caption(f"{len(study.complete)} complete trial(s): importances need at least two.")
    how_to_read(HELP)
