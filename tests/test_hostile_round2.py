"""The second audit's own round: hostile inputs outside the issue's fifteen causes (other files,
other entry points), each pinned by a test that failed before its fix."""

from __future__ import annotations

import pytest

from prm.cli import main
from prm.config import ConfigError, RunConfig


@pytest.mark.parametrize("device", ["cuda:\u0663", "cuda:\u00b2", "cuda:\uff11", "cuda:99999"])
def test_a_device_with_non_ascii_digits_is_refused_by_the_config(device):
    """``\\d`` matches Arabic-Indic, superscript and fullwidth digits; ``int`` reads some of them
    and raises on others. A run.json is untrusted, so the check is ASCII only."""
    data = RunConfig().to_dict()
    data["device"] = device
    with pytest.raises(ConfigError, match="device"):
        RunConfig.from_dict(data)


@pytest.mark.parametrize("device", ["cuda:\u0663", "cuda:\u00b2"])
def test_a_device_with_non_ascii_digits_is_one_cli_error(device, monkeypatch, tmp_path, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--sequence", "digits-classes", "--device", device, "--out", str(tmp_path / "r")])
    assert exit_.value.code == 2
    assert "prm: error: --device" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------- live runs' console logs

def test_a_logs_folder_that_is_a_link_is_never_written_through(tmp_path):
    """A runs folder's ``.logs`` that links elsewhere: Start refuses with the reason (the views
    show OSError's message) and writes nothing where the link points; no child starts."""
    from explorer import live

    root, outside = tmp_path / "runs", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / ".logs").symlink_to(outside)
    before = dict(live._children)
    with pytest.raises(OSError, match="is a link or not a folder"):
        live.start(live.LiveOptions(sequence="digits-classes", n_tasks=2, epochs=1), root=root)
    assert list(outside.iterdir()) == []
    assert live._children == before


def test_the_console_log_is_read_without_following_a_link(tmp_path):
    from explorer import live

    secret = tmp_path / "secret.txt"
    secret.write_text("not yours\n")
    folder = tmp_path / "runs" / "r"
    (tmp_path / "runs" / ".logs").mkdir(parents=True)
    live.log_path(folder).symlink_to(secret)
    assert live.log_tail(folder) == ""
    live.log_path(folder).unlink()
    live.log_path(folder).write_text("a\nb\n")
    assert live.log_tail(folder) == "a\nb"


# ----------------------------------------------------------------------------- links

@pytest.mark.parametrize("view", ["Bogus", "Overview\x00", "x" * 5000])
def test_a_link_to_a_view_that_does_not_exist_says_so(view):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from explorer import state as keys

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "explorer" / "app.py"), default_timeout=60)
    at.query_params[keys.VIEW] = view
    at.run()
    assert not at.exception
    said = [w.value for w in at.warning if "the view" in w.value]
    assert len(said) == 1 and "showing Story instead" in said[0]
    assert len(said[0]) < 1000  # a long value is cut, not echoed


def test_a_runs_folder_under_an_unknown_users_home_is_a_sidebar_error():
    """``~nobody/runs``: Path.expanduser raises a bare RuntimeError, which used to reach the page."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from explorer import state as keys

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "explorer" / "app.py"), default_timeout=60)
    at.session_state[keys.RUNS_DIR] = "~no_such_user_zz/runs"
    at.run()
    assert not at.exception
    assert any("no home folder" in e.value and "Type another runs folder" in e.value for e in at.sidebar.error)


def test_a_runs_folder_that_is_a_symlink_loop_is_a_sidebar_error(tmp_path):
    """``Path.resolve`` raises RuntimeError on a loop; the sidebar says the folder cannot hold runs."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from explorer import state as keys

    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "explorer" / "app.py"), default_timeout=60)
    at.session_state[keys.RUNS_DIR] = str(tmp_path / "a")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("cannot hold runs" in e.value for e in at.sidebar.error)
