"""Hostile input to the CLI, round 2 (docs/reliability.md, cases C01-C10, D05, W02): strings
from run files reach the terminal only as harmless text, compare refuses lists that name no
work or the same work twice, table skips a run that learnt nothing, tune and compare keep
their folders where they were told, and whatif refuses a parent it cannot replay here.

Each refusal is one ``prm: error:`` line, exit 2, and nothing created."""

from __future__ import annotations

import json
import os
import shutil
import unicodedata
from pathlib import Path
from types import SimpleNamespace

import pytest

from prm.cli import main
from prm.text import terminal
from tests.test_cli_hardening import one_error

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_runs" / "digits-classes-prm-s0"
TINY = ["--sequence", "digits-classes", "--n-tasks", "2", "--width", "16", "--epochs", "2",
        "--dtd-epochs", "2", "--head-epochs", "1", "--no-umap", "--quiet"]
HOSTILE = "\x1b]0;PWNED\x07\x1b[2J\x1b[31mred\x9b1m\x7f\t\nrun\u202egpj.exe\u2028\u200dend"


def assert_terminal_safe(text: str) -> None:
    """No character that a terminal acts on or that changes how text reads, and encodable."""
    text.encode("utf-8")
    bad = [c for c in text if c != "\n" and unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")]
    assert not bad, (bad, text)


def copy_sample(tmp_path: Path, name: str, change) -> Path:
    """The small bundled run, copied, its run_started record changed by ``change(record)``."""
    folder = tmp_path / name
    shutil.copytree(SAMPLE, folder)
    (folder / "summary.json").unlink()
    lines = (folder / "events.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    change(first)
    lines[0] = json.dumps(first)
    (folder / "events.jsonl").write_text("\n".join(lines) + "\n")
    return folder


# ----------------------------------------------------------------------------- C09, D05: terminal text


@pytest.mark.parametrize("raw, shown", [
    ("\x1b]0;x\x07", "\\x1b]0;x\\x07"), ("a\tb\nc\r", "a\\tb\\nc\\r"), ("\x7f\x85\x9b", "\\x7f\\x85\\x9b"),
    ("run\u202egpj", "run\\u202egpj"), ("a\u2028b\u2029", "a\\u2028b\\u2029"), ("\ufeff\U000e0041", "\\ufeff\\U000e0041"),
    ("soft\xadhyphen", "soft\\u00adhyphen"),
    ("sur\ud800rogate", "sur\\ud800rogate"), ("Zürich 東京 😀 \\x1b", "Zürich 東京 😀 \\x1b"),
])
def test_terminal_escapes_what_a_terminal_acts_on_and_keeps_every_script(raw, shown):
    assert terminal(raw) == shown
    assert terminal(shown) == shown  # idempotent: what it gives back is safe already
    assert_terminal_safe(terminal(raw))


def test_show_prints_a_hostile_task_name_as_harmless_text(tmp_path, capsys):
    """C09a: escape sequences, line breaks and format characters in a task name must not
    reach the terminal (a lone surrogate there is refused by the loader, prm.records)."""
    def rename(first):
        first["tasks"][0]["name"] = HOSTILE
    run = copy_sample(tmp_path, "run", rename)
    assert main(["show", str(run)]) == 0
    out = capsys.readouterr().out
    assert_terminal_safe(out)
    row = next(line for line in out.splitlines() if line.startswith("  T1 "))
    assert row.split()[1] == terminal(HOSTILE)[:18].split()[0]


def test_show_of_a_folder_whose_name_is_not_utf8_prints_it_escaped(tmp_path, capsys):
    """C09b/D05: a lone surrogate reaches the printed text (here the folder name, as Python
    decodes a byte that is not UTF-8) and must neither fail the print with UnicodeEncodeError
    nor read as a damaged run."""
    folder = Path(os.fsdecode(os.fsencode(tmp_path) + b"/run\xff"))
    shutil.copytree(SAMPLE, folder)
    assert main(["show", str(folder)]) == 0
    out = capsys.readouterr().out
    assert_terminal_safe(out)
    assert out.splitlines()[0].endswith("run\\udcff")


def test_show_escapes_warnings_and_folder_names(tmp_path, capsys):
    """Everything printed passes through the same function: the folder name and warnings too."""
    run = copy_sample(tmp_path, "odd\x1b[2Jfolder", lambda first: None)
    with (run / "events.jsonl").open("a") as log:
        log.write('{"type": "epoch", "note": "\\u001b]0;x\\u0007"}\n')  # a record after run_end: a warning
    assert main(["show", str(run)]) == 0
    out = capsys.readouterr().out
    assert_terminal_safe(out)
    assert "odd\\x1b[2Jfolder" in out


def test_table_escapes_names_in_its_cells_and_keeps_its_columns(tmp_path, capsys):
    def refamily(first):
        for task in first["tasks"]:
            task["family"] = "fam\x1b[2J\u202e"
    run = copy_sample(tmp_path, "run", refamily)
    assert main(["table", str(run), "--families"]) == 0
    out = capsys.readouterr().out
    assert_terminal_safe(out)
    lines = out.splitlines()
    family_head = lines.index("per task family (FWT against STL of the same seed):") + 1
    head, row = lines[family_head], lines[family_head + 1]
    assert row.split()[2] == terminal("fam\x1b[2J\u202e")
    assert head.index("tasks") == row.index(" 5 ") + 1  # the escaped cell is measured as printed


def test_tunes_study_printing_escapes_names_from_the_storage(capsys):
    from prm.cli.tune import print_study

    best = SimpleNamespace(number=0, state="complete", params={"lr\x1b[2J": 0.1}, val_acc=0.5, test_acc=0.5,
                           run_dir="/x/\x1b]0;t\x07", run_dir_relative=None, host="h\u202e")
    study = SimpleNamespace(name="tune\x1b]0;PWNED\x07", kind="tune", sequence="digits\x9b", method="hat",
                            attrs={"seed": 0}, trials=(best,), complete=(best,), best=best, ps=0.0)
    print_study(study, url="sqlite:///nowhere/o.db", target=1)
    out = capsys.readouterr().out
    assert_terminal_safe(out)
    assert "tune\\x1b]0;PWNED\\x07" in out


def test_error_lines_quoting_a_file_stay_one_harmless_line(tmp_path, capsys):
    bad = tmp_path / "x\x1b[2J\ny"
    bad.mkdir()
    err = one_error(["show", str(bad)], capsys)
    assert_terminal_safe(err)


# ----------------------------------------------------------------------------- C01, C02, C05: compare's lists


@pytest.mark.parametrize("option, value, message", [
    ("--sequence", ",", "names no sequence"), ("--sequence", " , ", "names no sequence"),
    ("--methods", ",", "names no method"), ("--seeds", ",", "expected non-negative integers"),
    ("--seeds", "0,0", "seed 0 twice"), ("--methods", "hat,stl,hat", "method hat twice"),
    ("--sequence", "digits-classes,digits-classes", "sequence digits-classes twice"),
])
def test_compare_refuses_empty_and_repeated_lists_before_anything_is_made(option, value, message, tmp_path,
                                                                          monkeypatch, capsys):
    import prm.cli.compare as cli

    trained = []
    monkeypatch.setattr(cli, "_compare_stack", lambda batch: trained.append(batch) or [])
    argv = ["compare", *TINY, "--methods", "hat", "--seeds", "0", "--out-dir", str(tmp_path / "X")]
    err = one_error([*argv, option, value], capsys)
    assert message in err
    assert not trained and not (tmp_path / "X").exists()


def test_compare_starts_no_more_workers_than_there_is_work(monkeypatch, capsys):
    """C05: --jobs 100000 for 2 batches (hat and its STL reference) must not fork 100000."""
    import prm.cli.compare as cli

    asked = []

    class Pool:  # counts the workers asked for, runs the batches here
        def __init__(self, max_workers):
            asked.append(max_workers)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def map(self, fn, items):
            return map(fn, items)

    monkeypatch.setattr(cli, "ProcessPoolExecutor", Pool)
    assert main(["compare", *TINY, "--methods", "hat", "--seeds", "0", "--jobs", "100000"]) == 0
    assert all(n <= 2 for n in asked), asked
    assert "hat" in capsys.readouterr().out


# ----------------------------------------------------------------------------- C08: table


def test_table_skips_a_finished_run_that_learnt_no_task(tmp_path, capsys):
    """C08a: run_started then run_end 'finished' (the loader reads it as failed, prm.run):
    one line saying it was skipped, and the table of the other runs."""
    empty = tmp_path / "empty"
    shutil.copytree(SAMPLE, empty)
    (empty / "summary.json").unlink()
    lines = (SAMPLE / "events.jsonl").read_text().splitlines()
    (empty / "events.jsonl").write_text(lines[0] + "\n" + lines[-1] + "\n")
    assert main(["table", str(empty), str(SAMPLE)]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith(f"prm: skipped {empty}: ") and captured.err.count("\n") == 1, captured.err
    assert "digits-classes  prm" in captured.out
    with pytest.raises(SystemExit) as info:
        main(["table", str(empty)])
    err = capsys.readouterr().err.splitlines()
    assert info.value.code == 2 and err[1:] == ["prm: error: no finished run among the folders given"], err


# ----------------------------------------------------------------------------- C10: tune's folders


def test_tune_refuses_a_runs_dir_that_is_a_file_before_the_storage_is_made(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    db = tmp_path / "a.db"
    err = one_error(["tune", *TINY, "--method", "hat", "--trials", "1", "--runs-dir", str(afile),
                     "--storage", f"sqlite:///{db}"], capsys)
    assert "--runs-dir" in err and "is a file" in err
    assert afile.read_text() == "x" and not db.exists()


BAD_STUDIES = ["../../../escaped", "a/b", "..", ".", "two\nlines", "x\x00y", "", "tab\there", "r\u202el",
               "x" * 256]


@pytest.mark.parametrize("name", BAD_STUDIES, ids=repr)
def test_tune_refuses_a_study_name_that_is_not_one_plain_folder_name(name, tmp_path, capsys):
    runs = tmp_path / "deep" / "er" / "runs"
    runs.mkdir(parents=True)
    db = tmp_path / "b.db"
    err = one_error(["tune", *TINY, "--method", "hat", "--trials", "1", "--runs-dir", str(runs), "--study", name,
                     "--storage", f"sqlite:///{db}"], capsys)
    assert "--study" in err
    assert_terminal_safe(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep"] and not any(runs.iterdir())


@pytest.mark.parametrize("name", BAD_STUDIES[:3], ids=repr)
def test_compare_refuses_a_study_name_that_is_not_one_plain_folder_name(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    err = one_error(["compare", *TINY, "--methods", "hat", "--seeds", "0", "--study", name,
                     "--storage", f"sqlite:///{tmp_path / 'c.db'}"], capsys)
    assert "--study" in err
    assert not any(tmp_path.iterdir())


def test_a_plain_study_name_is_taken(tmp_path):
    from prm.cli import build_parser

    args = build_parser().parse_args(["tune", "--study", "tune-digits classes_v2.1"])
    assert args.study == "tune-digits classes_v2.1"


# ----------------------------------------------------------------------------- W02: whatif of a CUDA parent


def claim_cuda(run: Path) -> None:
    """Make ``run`` say it was recorded on 'cuda': its config, and its checkpoints' config
    hash and CUDA generator state, as a run recorded on a GPU holds them."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from prm import checkpoint
    from prm.config import RunConfig

    meta = json.loads((run / "run.json").read_text())
    meta["config"]["device"] = "cuda"
    (run / "run.json").write_text(json.dumps(meta))
    lines = (run / "events.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["config"]["device"] = "cuda"
    (run / "events.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    digest = checkpoint.config_hash(RunConfig.from_dict(meta["config"]))
    for path in (run / "checkpoints").glob("*.safetensors"):
        with safe_open(path, "pt") as handle:
            metadata = handle.metadata()
        tensors = load_file(path)
        tensors["rng.cuda"] = torch.zeros(16, dtype=torch.uint8)
        save_file(tensors, path, metadata={**metadata, "config_sha256": digest})


def test_whatif_of_a_cuda_parent_on_a_machine_without_cuda_is_refused(tmp_path, monkeypatch, capsys):
    import torch

    parent = tmp_path / "parent"
    assert main(["run", *TINY, "--method", "prm", "--out", str(parent)]) == 0
    claim_cuda(parent)
    capsys.readouterr()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "child"
    err = one_error(["whatif", str(parent), "--task", "2", "--similar", "none", "--out", str(out), "--quiet"], capsys)
    assert "recorded on cuda" in err and "no CUDA device is available" in err
    assert not out.exists()


def test_run_keeps_its_cuda_refusal(tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    err = one_error(["run", *TINY, "--device", "cuda", "--out", str(tmp_path / "r")], capsys)
    assert "--device cuda: no CUDA device is available on this machine" in err
    assert not (tmp_path / "r").exists()


def test_compare_runs_no_more_workers_than_cpus_and_says_so(monkeypatch, capsys):
    import os

    import prm.cli.compare as cli

    def no_pool(max_workers):
        raise AssertionError(f"a pool of {max_workers} started on a 1-CPU machine")

    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    monkeypatch.setattr(cli, "ProcessPoolExecutor", no_pool)
    assert main(["compare", *TINY, "--methods", "hat", "--seeds", "0", "--jobs", "4"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "prm: --jobs 4: this machine has 1 CPU(s), so 1 stack(s) of runs train at a time\n"
    assert "hat" in captured.out
