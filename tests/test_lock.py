"""The lock file the README's commands and CI install from: every pin exact, every direct
dependency at the version requirements.txt names, and this environment installed from it (a
transitive release that slipped in, like SQLAlchemy 2.1 switching PostgreSQL's default driver,
shows up here as a version mismatch)."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+!\-]+)", re.ASCII)


def _pins(name: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = PIN.fullmatch(line)
        assert match, f"{name}: {line!r} is not an exact 'name==version' pin"
        pins[canonicalize_name(match[1])] = match[2]
    return pins


def test_the_lock_pins_every_direct_dependency_at_its_version():
    lock, direct = _pins("requirements.lock"), _pins("requirements.txt")
    assert {name: lock.get(name) for name in direct} == direct


def test_this_environment_matches_the_lock():
    wrong = {}
    for name, version in _pins("requirements.lock").items():
        installed = metadata.version(name)
        if Version(installed).public != Version(version).public:  # torch's '+cpu' label aside
            wrong[name] = (version, installed)
    assert not wrong, f"installed versions differ from requirements.lock (locked, installed): {wrong}"


def test_the_lock_holds_what_its_packages_require():
    """Every requirement of every locked package (for this platform) is itself locked: pip
    freeze of a fresh venv cannot miss one, a hand edit can."""
    from packaging.requirements import Requirement

    lock = _pins("requirements.lock")
    missing = set()
    for name in lock:
        for text in metadata.requires(name) or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                if canonicalize_name(req.name) not in lock:
                    missing.add(f"{name} -> {req.name}")
    assert not missing, sorted(missing)
