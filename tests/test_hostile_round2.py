"""The second audit's own round: hostile inputs outside the issue's fifteen causes (other files,
other entry points), each pinned by a test that failed before its fix."""

from __future__ import annotations

import pytest

from prm.__main__ import main
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
