"""Where prm-explorer keeps what it can rebuild: compiled code that would otherwise cost
seconds in every new process.

The root is ``$PRM_CACHE_DIR``, else ``$XDG_CACHE_HOME/prm-explorer``, else
``~/.cache/prm-explorer``, with one folder per kind of cache ("numba": UMAP's compiled
functions; "inductor": torch.compile's kernels). Anything in it may be deleted at any time. A
cache folder that cannot be created or written means no caching, never a failed run.

The folder must be the user's own: numba reads its cache files with pickle, as it does its
default cache in ``__pycache__``.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

ENV = "PRM_CACHE_DIR"
APP = "prm-explorer"
_UMAP_PACKAGES = ("umap", "pynndescent")

_log = logging.getLogger(__name__)
_lock = threading.Lock()  # the app may project from several threads; numba's config is global


def cache_root() -> Path:
    """``$PRM_CACHE_DIR``, else ``$XDG_CACHE_HOME/prm-explorer``, else ``~/.cache/prm-explorer``.
    A relative ``XDG_CACHE_HOME`` is ignored, as the XDG specification says."""
    chosen = os.environ.get(ENV)
    if chosen:
        return Path(chosen).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / APP
    return Path.home() / ".cache" / APP


def cache_dir(kind: str) -> Path:
    """The folder of one kind of cache (``cache_root() / kind``), created if missing.

    Raises ``OSError`` when it cannot be created or written (a read-only home, a file in the
    way, no home folder at all): callers then go without the cache.
    """
    if not kind or kind in (".", "..") or Path(kind).name != kind:
        raise ValueError(f"a cache kind is one folder name, got {kind!r}")
    try:
        path = cache_root() / kind
    except RuntimeError as exc:  # Path.home() with neither HOME nor a passwd entry
        raise OSError(f"no folder for caches: {exc}") from None
    path.mkdir(parents=True, exist_ok=True)
    tempfile.TemporaryFile(dir=path).close()  # writable? (os.access says yes to root on a read-only disk)
    return path


def cache_umap_compiles() -> int:
    """Keep UMAP's numba-compiled functions in ``cache_dir("numba")``, so that only the first
    process on a machine pays their compile (about 10 s on one core; a later process loads
    them in well under a second). Call it after ``import umap``, before the first fit.

    umap-learn and pynndescent decorate most functions with ``numba.njit`` without
    ``cache=True``; each module-level dispatcher that has no cache gets one here, pointed at
    our folder (numba's ``config.CACHE_DIR`` is set only while the caches are made, so other
    numba users in the process keep theirs). Functions numba builds later at run time (the
    closures pynndescent makes for large data) are not covered. Returns how many functions
    were given a cache: 0 when the folder is not writable or every one already has one.
    """
    try:
        folder = cache_dir("numba")
    except OSError as exc:
        _log.debug("numba cache off: %s", exc)
        return 0
    from numba.core.dispatcher import Dispatcher

    with _lock:
        modules = [m for name, m in list(sys.modules.items())
                   if m is not None and name.partition(".")[0] in _UMAP_PACKAGES]
        found = {id(v): v for m in modules for v in list(vars(m).values()) if isinstance(v, Dispatcher)}
        return _give_caches(list(found.values()), folder)


def _give_caches(dispatchers: list[Any], folder: Path) -> int:
    """Give each numba dispatcher that has no cache a quiet one in ``folder``; return how many.

    This is ``Dispatcher.enable_caching()`` (numba 0.68: ``self._cache = FunctionCache(py_func)``)
    with our cache class. numba picks the folder from ``config.CACHE_DIR`` when the cache is
    made, so it is set only meanwhile: other numba users in the process keep theirs.
    """
    from numba.core import config
    from numba.core.caching import NullCache

    cache_class, given = _quiet_cache_class(), 0
    before, config.CACHE_DIR = config.CACHE_DIR, str(folder)
    try:
        for dispatcher in dispatchers:
            if not isinstance(getattr(dispatcher, "_cache", None), NullCache):
                continue  # cache=True already (pynndescent's own), or not a dispatcher we know
            try:
                dispatcher._cache = cache_class(dispatcher.py_func)
                given += 1
            except Exception as exc:  # no source file to key the cache on, ...: compiled as before
                _log.debug("numba cache off for %s: %s", dispatcher.py_func.__qualname__, exc)
    finally:
        config.CACHE_DIR = before
    return given


@functools.cache
def _quiet_cache_class() -> type:
    """numba's FunctionCache made quiet; built on first use, as importing numba costs 0.2 s."""
    from numba.core.caching import FunctionCache

    class QuietCache(FunctionCache):
        """numba's function cache, except that a cache it cannot read or write is skipped.

        numba's own lets a damaged index (a pickle error) or a full disk fail the compile,
        and so the projection; a cache is never worth that. Loading is tried, and compiling
        follows whenever it fails; saving is tried once.
        """

        def load_overload(self, sig, target_context):
            try:
                return super().load_overload(sig, target_context)
            except Exception as exc:
                _log.debug("numba cache not read (%s): %s", self._name, exc)
                return None

        def save_overload(self, sig, data):
            try:
                super().save_overload(sig, data)
            except Exception as exc:
                _log.debug("numba cache not written (%s): %s", self._name, exc)

    return QuietCache


__all__ = ["ENV", "cache_dir", "cache_root", "cache_umap_compiles"]
