"""The method registry: every method the engine knows, one ``Method`` record each.

Each method lives in its own module of this package (its hooks and its record); this module
lists them once. Everything that asks about methods (the config's validation, the CLI's help,
the run format, the explorer's colours and labels, tuning, the paper's table) asks here, so a
method's name appears as a string only in its own module and in the orders below.

Adding a method: write ``prm/methods/<name>.py`` with its ``Hooks`` subclass (only what differs
from its nearest method) and its ``METHOD`` record, add it to ``REGISTRY``, and write its tests
and a paragraph in docs/method.md.
"""

from __future__ import annotations

from types import MappingProxyType

from prm.methods import acl, cat, ewc, hat, hypernet, joint, ncl, pathnet, prm, prm_d, prm_plus, prm_s, prm_t, stl, supsup
from prm.methods.base import Hooks, Method, Plan

REGISTRY = MappingProxyType({m.name: m for m in (
    prm.METHOD, prm_plus.METHOD, prm_s.METHOD, prm_d.METHOD, prm_t.METHOD,
    hat.METHOD, cat.METHOD, ncl.METHOD, ewc.METHOD, pathnet.METHOD, supsup.METHOD, hypernet.METHOD, acl.METHOD,
    stl.METHOD, joint.METHOD,
)})
"""Every method, in the order the CLI and the app list them (PRM and its ablations first, then the
baselines in the paper's family order, the references last)."""

NAMES = tuple(REGISTRY)

STORY_SIBLINGS = ("hat", "prm", "prm+", "prm-t", "ncl", "stl", "joint")
"""The methods a run is told next to in the Story (the ones its steps draw on), in its order."""

VARIANT = "prm+"
"""This project's variant of PRM (not the paper's): its levers also mark a PRM(T) run trained with
them apart in the paper's table (``prm.paper.method_label``)."""

DTD_PREFERENCE = ("prm+", "prm", "prm-t", "prm-s", "prm-d")
"""Which sibling's DTD decisions stand in for a run without DTD: the paper's method and its
variant first, the ablations (whose sets come from a fixed rule) last."""


def get(name: str) -> Method:
    """The method called ``name``; a ValueError naming the known ones otherwise."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(NAMES)}") from None


def find(name: object) -> Method | None:
    """The method called ``name``, None for any other value (a damaged or foreign run's method
    may be unknown, or not even a string): for views that show what they can of any run."""
    return REGISTRY.get(name) if isinstance(name, str) else None


def with_role(role: str) -> Method:
    """The one method with ``role`` (``baseline``: HAT, ``single-task``: STL ...)."""
    (method,) = (m for m in REGISTRY.values() if m.role == role)
    return method


def with_dtd() -> tuple[str, ...]:
    """The methods that run DTD (PRM, its variant and its ablations): what-if can replace their decisions."""
    return tuple(m.name for m in REGISTRY.values() if m.runs_dtd)


def dtd_sources() -> tuple[str, ...]:
    """The fixed sources of the ablations' dissimilar sets, as DTD records them."""
    return tuple(m.hooks.source for m in REGISTRY.values() if m.hooks.source is not None)


__all__ = ["DTD_PREFERENCE", "NAMES", "REGISTRY", "STORY_SIBLINGS", "VARIANT", "Hooks", "Method", "Plan", "dtd_sources",
           "find", "get", "with_dtd", "with_role"]
