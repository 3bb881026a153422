"""``prm table --paper``: the paper's published numbers (checked for consistency and against an
independent restatement), the layout from hand-made rows, and the command on tiny runs it trains."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prm import paper
from prm.cli import main
from prm.config import preset
from prm.methods import NAMES as METHODS
from prm.data import SEQUENCES
from prm.run import load_run
from prm.studies import load_study

TINY = ["--sequence", "digits-classes", "--n-tasks", "2", "--width", "16", "--epochs", "3",
        "--dtd-epochs", "2", "--head-epochs", "1", "--no-umap", "--quiet"]


# ----------------------------------------------------------------------------- the paper's numbers

def test_every_slot_holds_the_paper_methods_it_claims_in_range():
    assert [s.number for s in paper.SLOTS] == [1, 2, 3, 4, 5, 6]
    for slot in paper.SLOTS:
        assert set(paper.BASELINES) <= set(slot.results)
        assert {"PRM(S)", "PRM(D)", "w/o 2SO"} <= set(slot.results)
        assert ("PRM(T)" in slot.results) == (slot.kind == "mixed")  # the paper prints it for #5 and #6 only
        for name, pub in slot.results.items():
            assert 0 < pub.acc < 1, (slot.number, name)
            if name in paper.BASELINES:
                assert pub.ps_pct is not None and 0 <= pub.ps_pct < 100 and pub.ct > 0
                assert (pub.fwt_pct is None) == (pub.bwt_pct is None) == (name == "STL")
            else:
                assert pub.ps_pct is pub.ct is pub.fwt_pct is pub.bwt_pct is None
        assert slot.results["HAT"].bwt_pct == 0.0  # HAT cannot forget, in the paper as here
        assert all(-100 <= p.fwt_pct <= 0 for n, p in slot.results.items() if p.fwt_pct is not None)


def test_table_5_repeats_prm_of_tables_2_to_4():
    for n, ablations in paper.ABLATION_ACC.items():
        assert ablations[paper.ABLATIONS.index("PRM")] == paper._MAIN[n][paper.BASELINES.index("PRM")][0]


def test_headline_numbers_match_an_independent_restatement():
    """Acc and CT of HAT, CAT and PRM as a second reading of the paper gives them, typed apart."""
    headline = {1: ((0.905, 101), (0.907, 1276), (0.897, 80)), 2: ((0.582, 912), (0.587, 6018), (0.582, 635)),
                3: ((0.655, 245), (0.643, 2171), (0.657, 176)), 4: ((0.759, 70), (0.781, 707), (0.796, 54)),
                5: ((0.721, 357), (0.737, 9851), (0.720, 310)), 6: ((0.572, 891), (0.581, 22810), (0.582, 642))}
    for slot in paper.SLOTS:
        got = tuple((slot.results[m].acc, slot.results[m].ct) for m in ("HAT", "CAT", "PRM"))
        assert got == headline[slot.number]
    five = paper.SLOTS[4].results
    assert (five["CAT"].ps_pct, five["PRM"].ps_pct) == (7.2, 3.4)  # the PS the paper's text quotes


def test_slots_name_runnable_sequences_and_engine_methods():
    for slot in paper.SLOTS:
        assert slot.sequence in SEQUENCES and slot.analogue in SEQUENCES
        assert paper.slot_of(slot.sequence) is paper.slot_of(slot.analogue) is slot
    assert paper.slot_of("digits-mixed") is None
    assert all(label.split()[0] in METHODS for label in paper.ENGINE.values())
    assert paper.NOT_HERE == ()  # every row of the paper's Tables 2-4 runs here


def test_method_labels_keep_variants_apart():
    def label(method, **prm):
        return paper.method_label(preset("default", method=method, prm=prm))

    assert label("prm") == "prm" and label("prm+") == "prm+" and label("hat") == "hat"
    assert label("prm-t", relax=0.3, head_init="similar") == "prm-t+"
    assert label("prm-t", relax=0.3) == "prm-t"  # only both levers make PRM(T)+
    assert label("prm", two_stage=False) == "prm --no-2so" == paper.ENGINE["w/o 2SO"]


# ----------------------------------------------------------------------------- the layout, by hand

def _row(sequence, method, acc, *, seeds=2, bwt=(0.0, 0.0), fwt=(0.0, 0.0), ct=(10.0, 1.0)):
    return {"sequence": sequence, "method": method, "seeds": seeds, "acc": acc, "bwt": bwt, "fwt": fwt, "ct": ct}


def test_blocks_put_each_run_beside_the_paper_in_its_order():
    rows = [_row("digits-classes", "prm+", (0.95, 0.02), bwt=(-0.00004, 0.0)),
            _row("digits-classes", "hat", (0.9, 0.01), fwt=(-0.0123, 0.001), ct=(12.34, 0.5)),
            _row("EMNIST-10T", "prm", (0.875, 0.0), seeds=1, fwt=None, bwt=(-0.021, 0.0)),
            _row("digits-mixed", "hat", (0.5, 0.0))]
    blocks = paper.blocks(rows, ps={("digits-classes", "hat"): 0.034})
    assert len(blocks) == 7  # slot #1 twice: its analogue and the paper's own sequence
    first, own = blocks[0], blocks[1]
    assert first.title == ("#1 EMNIST-10T (dissimilar tasks; paper: Table 2 and Table 5) beside digits-classes "
                           "(bundled analogue)")
    assert own.title.endswith("beside EMNIST-10T (the paper's own sequence)")
    assert blocks[2].title.endswith("beside mnist5k-classes (bundled analogue, no runs given)")
    assert [b[0] for b in first.body] == ["STL (stl)", "NCL (ncl)", "ACL (acl)", "PNT (pathnet)", "SS (supsup)",
                                          "HYP (hypernet)", "HAT (hat)", "EHAT (ewc)", "CAT (cat)",
                                          "PRM (prm)", "PRM(S) (prm-s)", "PRM(D) (prm-d)",
                                          "w/o 2SO (prm --no-2so)", "prm+ (this project's)"]
    by_name = {b[0]: b[1:] for b in first.body}
    assert by_name["HAT (hat)"] == ["0.900 ± 0.010 (2)", "3.4%", "12.3", "−1.2% / 0.0%",
                                    "0.905", "0.3%", "101", "−2.4% / 0.0%"]
    assert by_name["prm+ (this project's)"] == ["0.950 ± 0.020 (2)", "–", "10.0", "0.0% / 0.0%", *["–"] * 4]
    assert by_name["STL (stl)"] == ["–", "–", "–", "–", "0.929", "0.6%", "45", "–"]
    assert by_name["PRM(S) (prm-s)"][4:] == ["0.882", "–", "–", "–"]
    prm = {b[0]: b[1:] for b in own.body}["PRM (prm)"]
    assert prm == ["0.875 ± 0.000 (1)", "–", "10.0", "– / −2.1%", "0.897", "0.4%", "80", "−2.3% / −1.0%"]
    assert "PRM(T) (prm-t)" in [b[0] for b in blocks[-1].body]  # #6: the paper reports PRM(T) there
    assert paper.unplaced(rows) == ["digits-mixed"]
    assert all(len(line) == len(b.head) for b in blocks for line in b.body)


# ----------------------------------------------------------------------------- the command on tiny runs

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """HAT and STL on digits-classes (slot #1), seeds 0 and 1, and a PRM(T)+ run of seed 0."""
    out = tmp_path_factory.mktemp("paper") / "runs"
    assert main(["compare", *TINY, "--methods", "hat", "--seeds", "0,1", "--out-dir", str(out)]) == 0
    assert main(["run", *TINY, "--method", "prm-t", "--relax", "0.3", "--head-init", "similar", "--seed", "0",
                 "--out", str(out / "prm-t-plus")]) == 0
    return sorted(out.iterdir())


def _by_hand(folders, sequence_method):
    """Acc mean ± std over seeds, mean FWT and BWT in %, mean CT: from the accuracy matrices."""
    acc, fwt, bwt, ct = [], [], [], []
    for method, seed in sequence_method:
        run = load_run(next(f for f in folders if f.name.endswith(f"-{method}-s{seed}")))
        stl = load_run(next(f for f in folders if f.name.endswith(f"-stl-s{seed}"))).state.accuracy_matrix("test")
        R = run.state.accuracy_matrix("test")
        acc.append(R[-1].mean())
        bwt.append(np.mean(R[-1] - np.diag(R)))
        fwt.append(np.mean(np.diag(R) - np.diag(stl)))
        ct.append(run.state.end.seconds)
    return acc, 100 * np.mean(fwt), 100 * np.mean(bwt), np.mean(ct)


def _pct(x):
    return f"{round(x, 1) + 0.0:.1f}%".replace("-", "−")


def test_cli_prints_the_runs_beside_the_paper(runs, capsys):
    assert main(["table", "--paper", *map(str, runs)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert lines[0].startswith("#1 EMNIST-10T (dissimilar tasks; paper: Table 2 and Table 5) beside digits-classes")
    hat = next(line for line in lines if line.startswith("HAT (hat)"))
    acc, fwt, bwt, ct = _by_hand(runs, [("hat", 0), ("hat", 1)])
    cells = [c for c in hat.split("  ") if c.strip()]
    assert [c.strip() for c in cells] == ["HAT (hat)", f"{np.mean(acc):.3f} ± {np.std(acc):.3f} (2)", "–",
                                          f"{ct:.1f}", f"{_pct(fwt)} / {_pct(bwt)}",
                                          "0.905", "0.3%", "101", "−2.4% / 0.0%"]
    plus = next(line for line in lines if line.startswith("prm-t+ (this project's)"))
    assert "(1)" in plus and plus.split()[-4:] == ["–"] * 4  # kept apart from PRM(T), paper side empty
    assert sum(line.startswith("#") for line in lines) == 6
    assert lines[-1].startswith("PS: give --storage")  # every row of the paper's tables runs here: no note of missing ones

    assert main(["table", "--paper", "--markdown", *map(str, runs)]) == 0
    md = capsys.readouterr().out.splitlines()
    assert md[0].startswith("**#1 EMNIST-10T") and md[1] == "" and md[2].startswith("| method | Acc ± sd (seeds) |")
    assert any(line.startswith(f"| HAT (hat) | {np.mean(acc):.3f} ± ") for line in md)


def test_cli_refuses_what_has_no_place_in_the_paper(runs, tmp_path, capsys):
    mixed = tmp_path / "mixed"
    assert main(["run", *TINY[2:], "--sequence", "digits-mixed", "--method", "ncl", "--out", str(mixed)]) == 0
    capsys.readouterr()
    for argv, message in [(["table", "--paper", str(mixed)], "no run of a sequence in the paper's table"),
                          (["table", "--paper", "--families", *map(str, runs)], "--families is for the plain table"),
                          (["table", "--paper", str(tmp_path / "none")], "no finished run among the folders given")]:
        with pytest.raises(SystemExit) as info:
            main(argv)
        err = capsys.readouterr().err
        assert info.value.code == 2 and err.splitlines()[-1].startswith("prm: error:") and message in err
    assert main(["table", "--paper", str(mixed), *map(str, runs)]) == 0
    assert "left out digits-mixed: not a sequence of the paper's table" in capsys.readouterr().err


def test_ps_comes_from_the_storage_tune_studies(runs, tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/o.db"
    assert main(["tune", *TINY, "--method", "hat", "--trials", "2", "--storage", url,
                 "--runs-dir", str(tmp_path / "tune")]) == 0
    capsys.readouterr()
    accs = [t.test_acc for t in load_study(url, "tune-digits-classes-hat").complete]
    assert len(accs) == 2 and math.isfinite(accs[0])
    ps = abs(accs[0] - accs[1]) / 2  # the population std of two numbers, by hand
    assert main(["table", "--paper", "--storage", url, *map(str, runs)]) == 0
    out = capsys.readouterr().out
    hat = [c.strip() for c in next(x for x in out.splitlines() if x.startswith("HAT (hat)")).split("  ") if c.strip()]
    assert hat[2] == _pct(100 * ps)
    assert f"tune study of the same sequence and method on {url}" in out
    assert main(["table", "--storage", url, *map(str, runs)]) == 0  # the plain table gains a PS column
    plain = capsys.readouterr().out.splitlines()
    assert plain[0].split()[-1] == "PS"
    assert next(x for x in plain if x.split()[1] == "hat").split()[-1] == f"{ps:.3f}"
