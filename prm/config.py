"""Typed, frozen run configuration.

Every hyper-parameter of a run lives here, so that a run folder's ``run.json`` holds the
whole recipe and ``RunConfig.from_dict(json)`` rebuilds it exactly. Defaults follow HAT's
reference code (docs/method.md; SGD lr 0.05, divided by 3 after 5
epochs without validation improvement, stop below 1e-4, smax 400, lamb 0.75, clip 10000),
except three settings sized for the bundled 8x8 digits, whose tasks hold 80-220 training
images: layer width 256 (``bench/engine.py``), batch 16 and lr 0.1. With HAT's batch of 64
a writer task has two batches per epoch, s jumps from 1/smax straight to smax, and HAT
reached 0.91-0.93 mean accuracy on four writer tasks where batch 16 / lr 0.1 reached 0.966
in fewer epochs (``scripts/sweep_defaults.py``; numbers in docs/speed.md).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from prm import methods
from prm.methods.acl import ACLConfig
from prm.methods.hypernet import HyperNetConfig
from prm.methods.pathnet import PathNetConfig
from prm.methods.supsup import SupSupConfig
from prm.limits import (FLOAT32_MAX, MAX_BATCH, MAX_EPOCHS, MAX_INPUT, MAX_LAYERS, MAX_SEED, MAX_WEIGHTS,
                        MAX_WIDTH)
from prm.similarity import FEATURES, RULES

class ConfigError(ValueError):
    """An impossible or unknown setting; the message names the field and the valid range."""


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """The masked MLP: input -> [FC -> ReLU -> dropout -> mask] x layers -> one head per task."""

    hidden: tuple[int, ...] = (256, 256)
    input_dropout: float = 0.2
    hidden_dropout: float = 0.5


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """SGD with HAT's validation-loss patience schedule, used by every training phase.

    ``min_batches``: the batch shrinks (for every method alike) so that an epoch of the new
    task has at least this many batches. HAT anneals s over an epoch's batches; a 20-image
    few-shot task in batches of 16 has two, s jumps from 1/smax to smax, and HAT fell from
    0.906 to 0.790 on digits-writers-few (2 shots, seeds 100-102; STL 0.923). Every task of
    the full bundled sequences already has at least 5 batches, so they are unchanged.
    """

    lr: float = 0.1
    lr_min: float = 1e-4
    lr_factor: float = 3.0
    patience: int = 5
    max_epochs: int = 200
    batch_size: int = 16
    min_batches: int = 5
    clip: float = 10000.0


@dataclass(frozen=True, kw_only=True)
class HATConfig:
    """HAT's mask mechanics (docs/method.md, "HAT")."""

    smax: float = 400.0
    lamb: float = 0.75
    thres_cosh: float = 50.0
    thres_emb: float = 6.0


@dataclass(frozen=True, kw_only=True)
class PRMConfig:
    """PRM's two phases: dissimilar-task detection (DTD), then learning with relaxed masks.

    ``head_epochs`` bounds DTD's 1st optimisation (head only); ``dtd_epochs`` bounds the 2nd
    (whole model, every previous task protected). Both use the patience schedule of
    :class:`OptimConfig`, capped at these budgets, because DTD's weights are thrown away and
    only the embeddings' directions matter. ``two_stage=False`` is the paper's "w/o 2SO"
    ablation. ``reg_mask`` picks the mask the sparsity regulariser counts as already used in
    LwPRM: ``accumulated`` (a_<=t-1, every previous task: reusing any earlier unit is free,
    which is what transfer wants) or ``relaxed`` (p_<=t-1, dissimilar tasks only). The paper
    does not say; we default to ``accumulated``. ``undecided`` is what DTD concludes when
    X-means had nothing it could test (two tasks: a 2-point cluster cannot be split, so
    "one cluster" would be a default, not evidence): ``dissimilar`` protects the earlier task
    as HAT would, since forgetting cannot be undone while a missed transfer costs little;
    ``similar`` takes X-means' single cluster at face value. ``settle`` > 0 ends DTD's 2nd
    optimisation early once its answer has settled: every ``settle_every`` epochs DTD's rule
    is asked for the dissimilar sets on the embeddings as they are, and training stops once
    the answer has not changed for ``settle`` checks in a row (0, the default: the paper's
    fixed budget). The decision itself is then taken as usual, on the best-validation state.

    The remaining fields are levers studied in ``docs/dtd-study.md``; their defaults are the
    paper's recipe. ``features``: what DTD clusters: ``raw`` embeddings e (the paper),
    ``binary`` (e > 0, the mask at smax), ``standardised`` (each unit z-scored over the
    tasks), ``unit`` (each task's row scaled to length 1: cosine geometry, which vector
    length does not dominate). ``clustering``: ``xmeans`` (the paper), ``linkage`` (average
    linkage on cosine distance, clusters cut at ``threshold``) or ``cut`` (an earlier task is
    similar when its cosine distance to the new task is below ``threshold``). ``relax``: how far
    similar tasks' units are relaxed, from 0 (protected as in HAT) to 1 (freed, the paper);
    see :func:`prm.masks.relaxed_mask`. ``embedding_init``: the new task's embedding before
    DTD and LwPRM: ``normal`` (HAT's N(0, 1)), ``zeros``, or ``mean`` (the mean of the
    earlier tasks' embeddings, a common start). ``head_init``: the new task's head before
    LwPRM: ``normal`` (PyTorch's init, the paper) or ``similar`` (a copy of the head of the
    nearest earlier task DTD called similar, when one has as many classes). ``layers``:
    ``each`` (the paper: one dissimilar set per masked layer) or ``together`` (one set for
    every layer, decided on all layers' embeddings side by side).
    """

    two_stage: bool = True
    head_epochs: int = 10
    dtd_epochs: int = 40
    settle: int = 0
    settle_every: int = 5
    k_max: int | None = None
    reg_mask: str = "accumulated"
    undecided: str = "dissimilar"
    features: str = "raw"
    clustering: str = "xmeans"
    threshold: float = 0.35
    relax: float = 1.0
    embedding_init: str = "normal"
    head_init: str = "normal"
    layers: str = "each"


@dataclass(frozen=True, kw_only=True)
class CATConfig:
    """CAT's own settings (Ke, Liu and Huang, NeurIPS 2020; docs/cat.md).

    Before learning task t, CAT trains one *transfer* network per earlier task j (j's masked
    features frozen, a new head for t) and one *reference* network (a fresh unmasked network
    of the same shape) on t; j is similar when its transfer network beats the reference on
    t's validation set. Each of these trainings uses the patience schedule of
    :class:`OptimConfig` capped at ``detect_epochs`` and at ``optim.max_epochs`` (CAT's code
    uses the main budget, 200, for every phase, so a shorter main budget shortens them too).
    ``heads``: attention heads of the knowledge-transfer attention (KTA, CAT's ``n_head``; the
    last layer's width must divide by it). ``kta_weight``: the weight of the KTA head's loss
    beside the main head's (CAT's ``model_weights``). ``attention_dropout``: dropout inside
    the attention and after its projections (CAT's code: 0.1).
    """

    detect_epochs: int = 200
    heads: int = 1
    kta_weight: float = 1.0
    attention_dropout: float = 0.1


@dataclass(frozen=True, kw_only=True)
class RecordConfig:
    """What the run folder keeps beyond the event log.

    The embedding trajectory is snapshotted after every ``trajectory_every``-th epoch (1 =
    every epoch) and stored as ``trajectory_dtype``; every 5th epoch in float16 keeps a
    10-task run under 1 MB and still draws each embedding's path.

    ``checkpoints``: masked methods keep a safetensors checkpoint at the start of every task
    after the first (``checkpoints/task_<t>.safetensors``: weights, embeddings, heads, the
    earlier tasks' masks, RNG states), which ``python -m prm whatif`` resumes from. Each file
    is the size of the network plus one mask per earlier task (measured at the default width
    256: 0.42 MB a task on digits-mixed, 3.8 MB for its 10 tasks; 1.16 MB a task on
    mnist5k-mixed, 11 MB for 10 tasks; docs/whatif.md). Turn it off (``--no-checkpoints``)
    for long runs of wide networks. Runs recorded before checkpoints existed read as True
    here but have no files; what-if checks the files.
    """

    trajectory_every: int = 5
    trajectory_dtype: str = "float16"
    projections: tuple[str, ...] = ("pca", "umap")
    checkpoints: bool = True


PARTS = ("setup", "method", "seed", "place", "record")
"""What each top-level RunConfig field is part of, so every "same experiment" key follows one
rule (:func:`key_view`): ``setup`` (the sequence, the network, the optimiser, HAT's settings),
``method`` (the method and its own settings), ``seed``, ``place`` (where the data and the
computation were: the data folder, the device) and ``record`` (what was written to disk)."""


def _known(method: Any) -> bool:
    return isinstance(method, str) and method in methods.REGISTRY


def _levers(method: Any) -> dict[str, Any]:
    """The PRMConfig fields ``method`` starts from (none for an unknown name: validation says why)."""
    return dict(methods.REGISTRY[method].levers) if _known(method) else {}


def _part(part: str, default: Any = None, *, factory: Any = None) -> Any:
    assert part in PARTS
    if factory is not None:
        return field(default_factory=factory, metadata={"part": part})
    return field(default=default, metadata={"part": part})


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """One run: a method learning one task sequence from one seed."""

    sequence: str = _part("setup", "digits-mixed")
    n_tasks: int | None = _part("setup", None)
    shots: int | None = _part("setup", None)  # training images per class of a few-shot sequence; None: its default
    data_dir: str | None = _part("place", None)
    method: str = _part("method", "prm")
    seed: int = _part("seed", 0)
    device: str = _part("place", "cpu")
    model: ModelConfig = _part("setup", factory=ModelConfig)
    optim: OptimConfig = _part("setup", factory=OptimConfig)
    hat: HATConfig = _part("setup", factory=HATConfig)
    prm: PRMConfig = _part("method", None)  # None: the method's own starting point (its ``levers``)
    cat: CATConfig = _part("method", factory=CATConfig)
    pathnet: PathNetConfig = _part("method", factory=PathNetConfig)
    supsup: SupSupConfig = _part("method", factory=SupSupConfig)
    hypernet: HyperNetConfig = _part("method", factory=HyperNetConfig)
    acl: ACLConfig = _part("method", factory=ACLConfig)
    record: RecordConfig = _part("record", factory=RecordConfig)
    ewc_lambda: float = _part("method", 5000.0)

    def __post_init__(self) -> None:
        if self.prm is None:  # a variant's levers belong to it: RunConfig(method="prm+") runs PRM+
            object.__setattr__(self, "prm", PRMConfig(**_levers(self.method)))
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        """Rebuild a config from ``to_dict`` output; unknown keys are an error, not ignored."""
        return _build(cls, data)

    def replace(self, **changes: Any) -> "RunConfig":
        """A copy with ``changes``. A new ``method`` without a new ``prm`` moves the levers: the
        old method's return to their defaults and the new method's apply, every other PRM
        setting kept (``replace(method="prm+")`` of a PRM config is PRM+ with its settings)."""
        if "method" in changes and "prm" not in changes:
            defaults = PRMConfig()
            reset = {name: getattr(defaults, name) for name in _levers(self.method)}
            changes["prm"] = dataclasses.replace(self.prm, **{**reset, **_levers(changes["method"])})
        return dataclasses.replace(self, **changes)


PRM_CHOICES: dict[str, tuple[str, ...]] = {
    "features": FEATURES,
    "clustering": ("xmeans", *RULES),
    "embedding_init": ("normal", "zeros", "mean"),
    "head_init": ("normal", "similar"),
    "layers": ("each", "together"),
}
"""The valid values of PRMConfig's string levers (the first is the paper's recipe)."""


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "paper": {
        "model": {"hidden": (2000, 2000)},
        "optim": {"lr": 0.025, "lr_min": 0.001, "patience": 5, "batch_size": 64},
        "hat": {"smax": 400.0},
    },
}
"""Named starting points. ``paper``: the PRM paper's set-up (2 hidden layers as HAT's 2000
units, SGD from lr 0.025 down to 0.001, patience 5, batch 64, smax 400); meant for its own
data sets (``EMNIST-10T`` ...), far too slow and large for the bundled 8x8 digits."""


def results_relevant(config: dict[str, Any]) -> dict[str, Any]:
    """A config dict (``RunConfig.to_dict``) without the sections its method never reads: a
    section one method alone reads (CAT's ``cat``, ``Method.sections``) changes no other
    method's result, and runs and studies recorded before it existed carry none, so keys that
    say "the same experiment" leave it out for every other method."""
    foreign = {s for m in methods.REGISTRY.values() if m.name != config.get("method") for s in m.sections}
    return {k: v for k, v in config.items() if k not in foreign}


def key_view(config: dict[str, Any], *, without: tuple[str, ...]) -> dict[str, Any]:
    """The config dict as a "same experiment" key sees it: :func:`results_relevant`, without
    the top-level fields that are part of ``without`` (:data:`PARTS`). Every such key (the
    explorer's grouping of runs and of set-ups, a study's set-up) is one of these views."""
    assert set(without) <= set(PARTS)
    dropped = {f.name for f in dataclasses.fields(RunConfig) if f.metadata["part"] in without}
    return {k: v for k, v in results_relevant(config).items() if k not in dropped}


def preset(name: str, **overrides: Any) -> RunConfig:
    """A RunConfig from a named preset, with top-level fields overridden (sequence, seed ...).

    A method variant (``method="prm+"``) starts from its levers (``Method.levers``); a ``prm``
    mapping among the overrides is applied on top of them.
    """
    if name not in PRESETS:
        raise ConfigError(f"preset: unknown {name!r}; choose one of {', '.join(PRESETS)}")
    base = RunConfig().to_dict()
    for section, values in PRESETS[name].items():
        base[section].update(values)
    base["prm"].update(_levers(overrides.get("method", base["method"])))
    base["prm"].update(overrides.pop("prm", {}))
    return RunConfig.from_dict({**base, **overrides})


def _build(cls: type, data: dict[str, Any]) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown field(s) {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        sub = _NESTED.get((cls, name))
        if sub is not None:
            kwargs[name] = _build(sub, value)
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


_NESTED = {
    (RunConfig, "model"): ModelConfig,
    (RunConfig, "optim"): OptimConfig,
    (RunConfig, "hat"): HATConfig,
    (RunConfig, "prm"): PRMConfig,
    (RunConfig, "cat"): CATConfig,
    (RunConfig, "record"): RecordConfig,
    **{(RunConfig, m.sections[0]): m.settings for m in methods.REGISTRY.values() if m.settings is not None},
}
"""Each section's dataclass; a method's own settings (``Method.settings``) come from its module."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


_OPTIONAL_INTS = ("n_tasks", "k_max", "shots")  # int or None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_types(obj: Any, prefix: str = "") -> None:
    """Every number field has its default's type (an int where an int is meant) and every
    float is finite in float32: ``inf`` and ``nan`` pass ``> 0`` style checks, and they or a
    float32 overflow fail only mid-training."""
    for f in dataclasses.fields(obj):
        value, name = getattr(obj, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            _check_types(value, name + ".")
        elif isinstance(f.default, bool):
            _check(isinstance(value, bool), f"{name}: must be true or false, got {value!r}")
        elif isinstance(f.default, float):
            _check((_is_int(value) or isinstance(value, float)) and abs(value) <= FLOAT32_MAX  # abs first: 10**400
                   and math.isfinite(value), f"{name}: must be a finite number (float32), got {value!r}")
        elif _is_int(f.default) or f.name in _OPTIONAL_INTS:
            _check(_is_int(value) or (value is None and f.name in _OPTIONAL_INTS),
                   f"{name}: must be an integer, got {value!r}")


def validate(cfg: RunConfig) -> None:
    """Reject impossible settings up front, with a message a user can act on."""
    _check_types(cfg)
    _check(isinstance(cfg.sequence, str), f"sequence: must be a name, got {cfg.sequence!r}")
    _check(cfg.data_dir is None or isinstance(cfg.data_dir, str), f"data_dir: must be a path, got {cfg.data_dir!r}")
    _check(_known(cfg.method), f"method: unknown {cfg.method!r}; choose one of {', '.join(methods.NAMES)}")
    _check(cfg.n_tasks is None or cfg.n_tasks >= 1, f"n_tasks: must be a positive integer, got {cfg.n_tasks!r}")
    _check(cfg.shots is None or cfg.shots >= 1, f"shots: must be a positive integer, got {cfg.shots!r}")
    _check(0 <= cfg.seed <= MAX_SEED, f"seed: must be an integer from 0 to {MAX_SEED}, got {cfg.seed!r}")
    _check(isinstance(cfg.device, str) and re.fullmatch(r"cpu|cuda(:[0-9]{1,4})?", cfg.device) is not None,
           f"device: 'cpu' or 'cuda[:N]', got {cfg.device!r}")
    _check_model(cfg.model)
    _check_optim(cfg.optim)
    _check_hat(cfg.hat)
    _check_prm(cfg.prm)
    _check_cat(cfg.cat, cfg.model)
    own = methods.REGISTRY[cfg.method]
    if own.settings is not None:  # only the run's method reads its section: another's may not fit this network
        problems = getattr(cfg, own.sections[0]).problems(cfg.model)
        _check(not problems, "; ".join(problems))
    _check_record(cfg.record)
    _check(cfg.ewc_lambda >= 0, f"ewc_lambda: must be >= 0, got {cfg.ewc_lambda!r}")


def _check_model(m: ModelConfig) -> None:
    _check(isinstance(m.hidden, (tuple, list)) and len(m.hidden) >= 1 and all(_is_int(h) and h >= 1 for h in m.hidden),
           f"model.hidden: one or more positive layer widths, got {m.hidden!r}")
    _check(len(m.hidden) <= MAX_LAYERS, f"model.hidden: at most {MAX_LAYERS} hidden layers (MAX_LAYERS), "
           f"got {len(m.hidden)}")
    _check(max(m.hidden) <= MAX_WIDTH, f"model.hidden: at most {MAX_WIDTH} units per layer (MAX_WIDTH), "
           f"got {max(m.hidden)}")
    weights = sum(a * b for a, b in zip((MAX_INPUT, *m.hidden), m.hidden))
    _check(weights <= MAX_WEIGHTS, f"model.hidden: {m.hidden!r} has about {weights:.2g} weights for a "
           f"{MAX_INPUT}-pixel input, more than the {MAX_WEIGHTS:.0e} allowed (MAX_WEIGHTS); "
           "use fewer or narrower layers")
    for name in ("input_dropout", "hidden_dropout"):
        p = getattr(m, name)
        _check(0.0 <= p < 1.0, f"model.{name}: must be in [0, 1), got {p!r}")


def _check_optim(o: OptimConfig) -> None:
    _check(o.lr > 0, f"optim.lr: must be > 0, got {o.lr!r}")
    _check(0 < o.lr_min <= o.lr, f"optim.lr_min: must be in (0, lr], got {o.lr_min!r}")
    _check(o.lr_factor > 1, f"optim.lr_factor: must be > 1, got {o.lr_factor!r}")
    _check(1 <= o.patience <= MAX_EPOCHS, f"optim.patience: must be from 1 to {MAX_EPOCHS}, got {o.patience!r}")
    _check(1 <= o.max_epochs <= MAX_EPOCHS, f"optim.max_epochs: must be from 1 to {MAX_EPOCHS}, got {o.max_epochs!r}")
    _check(1 <= o.batch_size <= MAX_BATCH, f"optim.batch_size: must be from 1 to {MAX_BATCH}, got {o.batch_size!r}")
    _check(1 <= o.min_batches <= MAX_BATCH, f"optim.min_batches: must be from 1 to {MAX_BATCH}, got {o.min_batches!r}")
    _check(o.clip > 0, f"optim.clip: must be > 0, got {o.clip!r}")


def _check_hat(h: HATConfig) -> None:
    _check(h.smax > 1, f"hat.smax: must be > 1, got {h.smax!r}")
    _check(h.lamb >= 0, f"hat.lamb: must be >= 0, got {h.lamb!r}")
    _check(h.thres_cosh > 0 and h.thres_emb > 0, "hat.thres_cosh and hat.thres_emb: must be > 0")


def _check_prm(d: PRMConfig) -> None:
    _check(0 <= d.head_epochs <= MAX_EPOCHS, f"prm.head_epochs: must be from 0 to {MAX_EPOCHS}, got {d.head_epochs!r}")
    _check(1 <= d.dtd_epochs <= MAX_EPOCHS, f"prm.dtd_epochs: must be from 1 to {MAX_EPOCHS}, got {d.dtd_epochs!r}")
    _check(0 <= d.settle <= MAX_EPOCHS, f"prm.settle: must be from 0 to {MAX_EPOCHS}, got {d.settle!r}")
    _check(1 <= d.settle_every <= MAX_EPOCHS, f"prm.settle_every: must be from 1 to {MAX_EPOCHS}, got {d.settle_every!r}")
    _check(d.k_max is None or d.k_max >= 1, f"prm.k_max: must be >= 1 or null, got {d.k_max!r}")
    _check(d.reg_mask in ("accumulated", "relaxed"),
           f"prm.reg_mask: 'accumulated' or 'relaxed', got {d.reg_mask!r}")
    _check(d.undecided in ("dissimilar", "similar"),
           f"prm.undecided: 'dissimilar' or 'similar', got {d.undecided!r}")
    for name, choices in PRM_CHOICES.items():
        _check(getattr(d, name) in choices, f"prm.{name}: one of {', '.join(choices)}, got {getattr(d, name)!r}")
    _check(0.0 < d.threshold < 2.0, f"prm.threshold: a cosine distance in (0, 2), got {d.threshold!r}")
    _check(0.0 <= d.relax <= 1.0, f"prm.relax: must be in [0, 1], got {d.relax!r}")


def _check_cat(c: CATConfig, m: ModelConfig) -> None:
    _check(1 <= c.detect_epochs <= MAX_EPOCHS, f"cat.detect_epochs: must be from 1 to {MAX_EPOCHS}, "
           f"got {c.detect_epochs!r}")
    _check(1 <= c.heads <= m.hidden[-1] and m.hidden[-1] % c.heads == 0,
           f"cat.heads: must divide the last hidden layer's width ({m.hidden[-1]}), got {c.heads!r}")
    _check(c.kta_weight >= 0, f"cat.kta_weight: must be >= 0, got {c.kta_weight!r}")
    _check(0.0 <= c.attention_dropout < 1.0, f"cat.attention_dropout: must be in [0, 1), got {c.attention_dropout!r}")


def _check_record(r: RecordConfig) -> None:
    _check(r.trajectory_every >= 1, f"record.trajectory_every: must be >= 1, got {r.trajectory_every!r}")
    _check(r.trajectory_dtype in ("float16", "float32"),
           f"record.trajectory_dtype: 'float16' or 'float32', got {r.trajectory_dtype!r}")
    _check(isinstance(r.projections, (tuple, list)) and all(p in ("pca", "umap") for p in r.projections),
           f"record.projections: subset of pca, umap, got {r.projections!r}")
