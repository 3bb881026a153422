"""The model and training options that ``run``, ``compare`` and ``tune`` share, and the one
way a parsed command line becomes a :class:`~prm.config.RunConfig`: the preset first, then
each option given (an option left out keeps the preset's value)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re

from prm.cli.common import fail, path
from prm import methods
from prm.config import PRESETS, PRM_CHOICES, PRMConfig, RunConfig, preset
from prm.data import DATA_ENV, SEQUENCES
from prm.limits import MAX_LAYERS
from prm.step import COMPILE_MODES


def sequence_help() -> str:
    """Every sequence with its description, for a ``--sequence`` help text."""
    return "; ".join(f"{k}: {v}" for k, v in SEQUENCES.items())


def method_help() -> str:
    """Every method with its description, for a ``--method`` help text."""
    return "; ".join(f"{m.name}: {m.help}" for m in methods.REGISTRY.values())


def add_training_options(p: argparse.ArgumentParser) -> None:
    """The options of :data:`OVERRIDES` and the rest :func:`run_config` reads, in one group
    whose help gives each default (the default preset's)."""
    d = RunConfig()
    g = p.add_argument_group("model and training (unset options come from --preset; defaults in brackets)")
    _add_model_options(g, d)
    _add_prm_options(g, d)
    _add_other_options(g, d)


def _add_model_options(g: argparse._ArgumentGroup, d: RunConfig) -> None:
    g.add_argument("--preset", default="default", choices=list(PRESETS),
                   help="default: sized for the bundled data; paper: the PRM paper's set-up "
                        "(2000 units, lr 0.025 to 0.001, batch 64) [%(default)s]")
    g.add_argument("--data-dir", type=path, default=None,
                   help="folder with the paper's data sets (EMNIST, CIFAR-100 binary, LEAF); default $PRM_DATA")
    g.add_argument("--n-tasks", type=int, default=None, help="number of tasks [the sequence's default]")
    g.add_argument("--shots", type=int, default=None,
                   help="few-shot (-few) and binary (-binary) sequences: training images per class (per answer) of "
                        "each writer or style task [the sequence's default]")
    g.add_argument("--width", type=int, help=f"units per hidden layer [{d.model.hidden[0]}]")
    g.add_argument("--layers", type=int, help=f"masked hidden layers [{len(d.model.hidden)}]")
    g.add_argument("--epochs", type=int, help=f"max epochs per task [{d.optim.max_epochs}]")
    g.add_argument("--lr", type=float, help=f"initial SGD learning rate [{d.optim.lr}]")
    g.add_argument("--batch-size", type=int, help=f"[{d.optim.batch_size}]")
    g.add_argument("--patience", type=int,
                   help=f"epochs without validation improvement before lr is divided [{d.optim.patience}]")
    g.add_argument("--lamb", type=float, help=f"mask sparsity regulariser strength [{d.hat.lamb}]")
    g.add_argument("--smax", type=float, help=f"HAT's maximal mask slope [{d.hat.smax}]")
    g.add_argument("--dropout", type=float, help=f"hidden dropout [{d.model.hidden_dropout}]")
    g.add_argument("--input-dropout", type=float, help=f"dropout of the input [{d.model.input_dropout}]")


def _lever(name: str) -> str:
    """``[default; prm+: its value]``: a PRM option's default and each variant's own value."""
    variants = "".join(f"; {m.name}: {m.levers[name]}" for m in methods.REGISTRY.values() if name in m.levers)
    return f"[{getattr(PRMConfig(), name)}{variants}]"


def _add_prm_options(g: argparse._ArgumentGroup, d: RunConfig) -> None:
    g.add_argument("--dtd-epochs", type=int, help=f"PRM: max epochs of DTD's 2nd optimisation [{d.prm.dtd_epochs}]")
    g.add_argument("--head-epochs", type=int, help=f"PRM: epochs of DTD's 1st optimisation [{d.prm.head_epochs}]")
    g.add_argument("--settle", type=int,
                   help=f"PRM: end DTD's 2nd optimisation once its answer has not changed for this many checks; "
                        f"0 keeps the paper's fixed budget [{d.prm.settle}]")
    g.add_argument("--settle-every", type=int, help=f"PRM: epochs between those checks [{d.prm.settle_every}]")
    g.add_argument("--no-2so", action="store_true", help="PRM: DTD without the 1st optimisation (paper's 'w/o 2SO')")
    g.add_argument("--reg-mask", choices=("accumulated", "relaxed"),
                   help=f"PRM: mask the sparsity regulariser treats as used in LwPRM [{d.prm.reg_mask}]")
    g.add_argument("--features", choices=PRM_CHOICES["features"],
                   help=f"PRM: what DTD clusters (docs/dtd-study.md) {_lever('features')}")
    g.add_argument("--clustering", choices=PRM_CHOICES["clustering"],
                   help=f"PRM: DTD's rule {_lever('clustering')}")
    g.add_argument("--threshold", type=float,
                   help=f"PRM: cosine distance of the linkage and cut rules {_lever('threshold')}")
    g.add_argument("--relax", type=float,
                   help=f"PRM: 0 protects similar tasks' units as HAT, 1 frees them (the paper) {_lever('relax')}")
    g.add_argument("--embedding-init", choices=PRM_CHOICES["embedding_init"],
                   help=f"PRM: the new task's embedding before DTD {_lever('embedding_init')}")
    g.add_argument("--head-init", choices=PRM_CHOICES["head_init"],
                   help=f"PRM: the new task's head before LwPRM {_lever('head_init')}")
    g.add_argument("--dtd-layers", choices=PRM_CHOICES["layers"],
                   help=f"PRM: one DTD call per masked layer, or one for all layers together {_lever('layers')}")


def _add_other_options(g: argparse._ArgumentGroup, d: RunConfig) -> None:
    g.add_argument("--detect-epochs", type=int,
                   help=f"CAT: max epochs of each transfer and reference training [{d.cat.detect_epochs}]")
    g.add_argument("--kta-weight", type=float, help=f"CAT: weight of the attention head's loss [{d.cat.kta_weight}]")
    g.add_argument("--cat-heads", type=int, help=f"CAT: heads of the knowledge-transfer attention [{d.cat.heads}]")
    g.add_argument("--ewc-lambda", type=float, help=f"EWC penalty strength [{d.ewc_lambda}]")
    own = [m.sections[0] for m in methods.REGISTRY.values() if m.settings is not None]
    g.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", dest="own_settings",
                   help=f"one of a baseline's own settings (sections: {', '.join(own)}; fields and defaults in "
                        "docs/baselines.md), e.g. --set supsup.sparsity=0.3; repeat for more")
    g.add_argument("--no-umap", action="store_true", help="store only PCA projections (skips UMAP's compile at run end)")
    g.add_argument("--no-checkpoints", action="store_true",
                   help="keep no task-start checkpoints (what-if needs them; docs/whatif.md gives their size)")
    g.add_argument("--device", default="cpu", help="cpu or cuda [%(default)s]")
    g.add_argument("--compile", default="auto", choices=COMPILE_MODES,
                   help="SGD steps compiled by torch.compile (results agree with eager to float rounding; "
                        "auto: where measured to pay, docs/speed.md) [%(default)s]")


OVERRIDES = {  # CLI option -> (config section, field)
    "epochs": ("optim", "max_epochs"), "lr": ("optim", "lr"), "batch_size": ("optim", "batch_size"),
    "patience": ("optim", "patience"), "lamb": ("hat", "lamb"), "smax": ("hat", "smax"),
    "dropout": ("model", "hidden_dropout"), "input_dropout": ("model", "input_dropout"), "dtd_epochs": ("prm", "dtd_epochs"),
    "head_epochs": ("prm", "head_epochs"), "reg_mask": ("prm", "reg_mask"),
    "settle": ("prm", "settle"), "settle_every": ("prm", "settle_every"),
    **{name: ("prm", name) for name in ("features", "clustering", "threshold", "relax", "embedding_init", "head_init")},
    "dtd_layers": ("prm", "layers"),
    "detect_epochs": ("cat", "detect_epochs"), "kta_weight": ("cat", "kta_weight"), "cat_heads": ("cat", "heads"),
}


def own_setting(text: str) -> tuple[str, str, object]:
    """``--set SECTION.FIELD=VALUE`` read against the section's dataclass: (section, field,
    the value in the type of the field's default); one ``prm: error:`` line otherwise."""
    sections = {m.sections[0]: m.settings for m in methods.REGISTRY.values() if m.settings is not None}
    key, sep, raw = text.partition("=")
    section, _, name = key.strip().partition(".")
    if not sep or section not in sections:
        fail(f"--set {text!r}: expected SECTION.FIELD=VALUE with SECTION one of {', '.join(sections)}")
    defaults = {f.name: f.default for f in dataclasses.fields(sections[section])}
    if name not in defaults:
        fail(f"--set {text!r}: {section} has no field {name!r}; its fields: {', '.join(defaults) or 'none'}")
    kind = type(defaults[name])
    try:
        if kind is bool:
            value: object = {"true": True, "false": False}[raw.strip().lower()]
        elif kind is tuple:  # layer widths: comma-separated integers
            value = [int(part) for part in raw.split(",")]
        else:
            value = kind(raw.strip())
    except (KeyError, ValueError):
        what = "comma-separated integers" if kind is tuple else f"a {kind.__name__}"
        fail(f"--set {text!r}: {section}.{name} takes {what}, got {raw!r}")
    return section, name, value


def device_problem(device: str) -> str | None:
    """Why ``device`` cannot train on this machine (no CUDA, no CUDA device of that index),
    None when it can: the one check of ``run``, ``compare`` and ``tune`` (their --device) and
    of ``whatif`` (the device its parent was recorded on)."""
    if not device.startswith("cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device is available on this machine"
    index = device.partition(":")[2]
    if index and (re.fullmatch("[0-9]{1,4}", index) is None or int(index) >= torch.cuda.device_count()):
        return f"this machine has CUDA devices 0 to {torch.cuda.device_count() - 1}"
    return None


def run_config(args: argparse.Namespace, *, sequence: str, method: str, seed: int) -> RunConfig:
    """The config of one run of ``method`` on ``sequence`` with ``seed``: ``--preset`` for that
    method, each training option given on top; one ``prm: error:`` line for a device this
    machine lacks or a layer count out of range."""
    problem = device_problem(args.device)
    if problem:
        fail(f"--device {args.device}: {problem}")
    base = preset(args.preset, method=method).to_dict()
    for option, (section, name) in OVERRIDES.items():
        if getattr(args, option) is not None:
            base[section][name] = getattr(args, option)
    if args.width is not None or args.layers is not None:
        width = args.width if args.width is not None else base["model"]["hidden"][0]
        layers = args.layers if args.layers is not None else len(base["model"]["hidden"])
        if not 1 <= layers <= MAX_LAYERS:  # checked before [width] * layers is built
            fail(f"--layers must be from 1 to {MAX_LAYERS}, got {layers}")
        base["model"]["hidden"] = [width] * layers
    base["optim"]["lr_min"] = min(base["optim"]["lr_min"], base["optim"]["lr"])
    if args.no_2so:
        base["prm"]["two_stage"] = False
    if args.no_umap:
        base["record"]["projections"] = ["pca"]
    if args.no_checkpoints:
        base["record"]["checkpoints"] = False
    if args.ewc_lambda is not None:
        base["ewc_lambda"] = args.ewc_lambda
    for text in args.own_settings:
        section, name, value = own_setting(text)
        base[section][name] = value
    data_dir = args.data_dir or os.environ.get(DATA_ENV)
    return RunConfig.from_dict({**base, "sequence": sequence, "n_tasks": args.n_tasks, "shots": args.shots,
                                "method": method,
                                "seed": seed, "device": args.device, "data_dir": data_dir})
