"""The command line for the baselines' own settings (``--set SECTION.FIELD=VALUE``) and their
tuned ranges."""

from __future__ import annotations

import argparse

import pytest

from prm import tune
from prm.cli.options import add_training_options, own_setting, run_config


def _config(*options: str, method: str = "supsup"):
    parser = argparse.ArgumentParser()
    add_training_options(parser)
    return run_config(parser.parse_args(list(options)), sequence="digits-mixed", method=method, seed=0)


def test_set_reads_each_value_in_its_fields_type():
    assert own_setting("supsup.sparsity=0.3") == ("supsup", "sparsity", 0.3)
    assert own_setting("pathnet.active=4") == ("pathnet", "active", 4)
    assert own_setting("hypernet.lookahead=false") == ("hypernet", "lookahead", False)
    assert own_setting("hypernet.hidden=20,30") == ("hypernet", "hidden", [20, 30])
    cfg = _config("--set", "supsup.sparsity=0.3", "--set", "supsup.weight_init=kaiming_normal")
    assert (cfg.supsup.sparsity, cfg.supsup.weight_init) == (0.3, "kaiming_normal")
    assert _config("--set", "hypernet.hidden=20,30", method="hypernet").hypernet.hidden == (20, 30)


@pytest.mark.parametrize("text, message", [
    ("sparsity=0.3", "with SECTION one of pathnet, supsup, hypernet, acl"),
    ("hat.lamb=0.3", "with SECTION one of"),
    ("supsup.density=0.3", "supsup has no field 'density'; its fields: sparsity, weight_init, score_init"),
    ("pathnet.active=three", "pathnet.active takes a int"),
    ("hypernet.lookahead=maybe", "hypernet.lookahead takes a bool"),
    ("hypernet.hidden=10;10", "takes comma-separated integers"),
])
def test_a_wrong_set_is_one_clear_error(text, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        own_setting(text)
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_an_impossible_value_is_refused_by_the_section_itself(capsys):
    with pytest.raises(Exception, match="supsup.sparsity"):
        _config("--set", "supsup.sparsity=1.5")


def test_each_baseline_tunes_its_own_settings_beside_the_common_ones():
    common = {"input_dropout", "hidden_dropout", "lr"}
    own = {"pathnet": {"mutation"}, "supsup": {"sparsity"}, "hypernet": {"beta"},
           "acl": {"adv_weight", "diff_weight"}}
    for method, names in own.items():
        space = tune.search_space(method)
        assert {r.name for r in space} == common | names
        cfg = tune.apply_params(_config(method=method), {r.name: (r.low + r.high) / 2 for r in space})
        section = getattr(cfg, method)
        for r in space:
            if r.section == method:
                assert getattr(section, r.field) == pytest.approx((r.low + r.high) / 2)
