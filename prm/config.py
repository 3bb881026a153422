"""Typed, frozen run configuration.

Every hyper-parameter of a run lives here, so that a run folder's ``run.json`` holds the
whole recipe and ``RunConfig.from_dict(json)`` rebuilds it exactly. Defaults follow HAT's
reference code as restated in ``shared/PRM-NOTES.md`` (SGD lr 0.05, divided by 3 after 5
epochs without validation improvement, stop below 1e-4, smax 400, lamb 0.75, clip 10000),
except three settings sized for the bundled 8x8 digits, whose tasks hold 80-220 training
images: layer width 256 (``bench/engine.py``), batch 16 and lr 0.1. With HAT's batch of 64
a writer task has two batches per epoch, s jumps from 1/smax straight to smax, and HAT
reached 0.91-0.93 mean accuracy on four writer tasks where batch 16 / lr 0.1 reached 0.966
in fewer epochs (``scripts/sweep_defaults.py``; numbers in the README).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from prm.similarity import FEATURES, RULES

METHODS = ("prm", "prm+", "prm-s", "prm-d", "prm-t", "hat", "cat", "ncl", "ewc", "stl", "joint")
"""Every method the engine knows; ``prm-*`` are the paper's ablations."""

METHOD_HELP = {
    "prm": "PRM: DTD (X-means on task embeddings) then learning with partially relaxed masks",
    "prm+": "PRM+ (this project's variant, not the paper's): DTD by average linkage on the cosine distance of "
            "binarised embeddings (both layers, cut 0.3), similar tasks' units relaxed to 0.3 of their gradient, "
            "the new head copied from the nearest similar task (docs/dtd-study.md)",
    "prm-s": "PRM(S) ablation: every previous task treated as similar (nothing protected in LwPRM)",
    "prm-d": "PRM(D) ablation: every previous task treated as dissimilar (HAT plus the DTD pass)",
    "prm-t": "PRM(T) ablation: the true similarity (same family and label set) replaces the clustering",
    "hat": "HAT: hard attention to the task, every previous task protected",
    "cat": "CAT (Ke et al. 2020): per earlier task a transfer network and per new task a reference network "
           "decide which earlier tasks are similar; their first-claimed units stay trainable and a knowledge-"
           "transfer attention over their masked features adds a second head (docs/cat.md)",
    "ncl": "naive continual learning: fine-tune the same unmasked network, no protection",
    "ewc": "EWC on the same unmasked network (Fisher from the task's training data)",
    "stl": "single-task learning: a fresh unmasked network per task (the reference for FWT)",
    "joint": "joint training (not continual): after each task t, a fresh unmasked network trained on the data "
             "of tasks 1..t at once, one head per task (the upper bound of transfer)",
}


class ConfigError(ValueError):
    """An impossible or unknown setting; the message names the field and the valid range."""


# Upper bounds, so that a typo (``--width 1000000000``) is refused up front instead of
# allocating until the machine swaps, or failing deep inside torch with a traceback.
MAX_WIDTH = 16384
"""Units in one hidden layer (8x the paper's 2000)."""
MAX_LAYERS = 8
"""Masked hidden layers (HAT and PRM use 2)."""
MAX_INPUT = 3072
"""The largest input of any sequence (CIFAR-100, CelebA: 3x32x32), used to bound the weights."""
MAX_WEIGHTS = 200_000_000
"""Hidden weights, counted as MAX_INPUT*w1 + w1*w2 + ...: 800 MB of float32 per copy of the
network (training keeps several: gradients, the best state, DTD's saved state; STL one per task).
The paper's 2 x 2000 set-up has about 10 million."""
MAX_EPOCHS = 100_000
"""Epochs of any phase, and patience: far beyond where the lr schedule stops."""
MAX_BATCH = 1_000_000
"""Batch size; a batch larger than a task's training set is the whole set anyway."""
FLOAT32_MAX = 3.4028234663852886e38
"""Largest float32: every float setting reaches float32 tensors (an lr of 1e39 overflows in SGD)."""
MAX_SEED = 2**32 - 1
"""Seeds reach numpy, torch and UMAP; UMAP (numpy's RandomState) takes 32-bit seeds only."""


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
    """HAT's mask mechanics (PRM-NOTES, 'HAT')."""

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


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """One run: a method learning one task sequence from one seed."""

    sequence: str = "digits-mixed"
    n_tasks: int | None = None
    shots: int | None = None  # training images per class of a few-shot (-few) sequence; None: its default
    data_dir: str | None = None
    method: str = "prm"
    seed: int = 0
    device: str = "cpu"
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    hat: HATConfig = field(default_factory=HATConfig)
    prm: PRMConfig = field(default_factory=PRMConfig)
    cat: CATConfig = field(default_factory=CATConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    ewc_lambda: float = 5000.0

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        """Rebuild a config from ``to_dict`` output; unknown keys are an error, not ignored."""
        return _build(cls, data)

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)


COMPILE_MODES = ("auto", "on", "off")
"""How SGD steps run (``prm.step``): ``auto`` compiled where that was measured to pay
(``prm.step.compile_pays``), ``on`` always compiled, ``off`` eager (the same function, op by op)."""


PRM_CHOICES: dict[str, tuple[str, ...]] = {
    "features": FEATURES,
    "clustering": ("xmeans", *RULES),
    "embedding_init": ("normal", "zeros", "mean"),
    "head_init": ("normal", "similar"),
    "layers": ("each", "together"),
}
"""The valid values of PRMConfig's string levers (the first is the paper's recipe)."""


VARIANT_LEVERS: dict[str, dict[str, Any]] = {
    "prm+": {"features": "binary", "clustering": "linkage", "threshold": 0.3, "layers": "together", "relax": 0.3,
             "head_init": "similar"},
}
"""PRMConfig fields a named method variant starts from (before any explicit setting). PRM+ is
PRM with what the study in docs/dtd-study.md chose on seeds 100-102 (tested on seeds 0-4):
DTD calls by average linkage on the cosine distance of the binarised embeddings of both
layers together, cut at 0.3; similar tasks' units relaxed to 0.3 of their gradient; the
new head started from its nearest similar task's head."""


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
    """A config dict (``RunConfig.to_dict``) without the sections its method never reads: CAT's
    settings (``cat``) change no other method's result, and runs and studies recorded before
    CAT existed carry none, so keys that say "the same experiment" (the explorer's grouping,
    tune's set-up) leave them out for every other method."""
    return config if config.get("method") == "cat" else {k: v for k, v in config.items() if k != "cat"}


def preset(name: str, **overrides: Any) -> RunConfig:
    """A RunConfig from a named preset, with top-level fields overridden (sequence, seed ...).

    A method variant (``method="prm+"``) starts from its ``VARIANT_LEVERS``; a ``prm`` mapping
    among the overrides is applied on top of them. Build variant runs through this function
    (the CLI does): ``RunConfig(method="prm+")`` alone keeps the paper's PRM settings.
    """
    if name not in PRESETS:
        raise ConfigError(f"preset: unknown {name!r}; choose one of {', '.join(PRESETS)}")
    base = RunConfig().to_dict()
    for section, values in PRESETS[name].items():
        base[section].update(values)
    base["prm"].update(VARIANT_LEVERS.get(overrides.get("method"), {}))
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
}


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
    _check(cfg.method in METHODS, f"method: unknown {cfg.method!r}; choose one of {', '.join(METHODS)}")
    _check(cfg.n_tasks is None or cfg.n_tasks >= 1, f"n_tasks: must be a positive integer, got {cfg.n_tasks!r}")
    _check(cfg.shots is None or cfg.shots >= 1, f"shots: must be a positive integer, got {cfg.shots!r}")
    _check(0 <= cfg.seed <= MAX_SEED, f"seed: must be an integer from 0 to {MAX_SEED}, got {cfg.seed!r}")
    _check(isinstance(cfg.device, str) and re.fullmatch(r"cpu|cuda(:[0-9]{1,4})?", cfg.device) is not None,
           f"device: 'cpu' or 'cuda[:N]', got {cfg.device!r}")
    m = cfg.model
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
    o = cfg.optim
    _check(o.lr > 0, f"optim.lr: must be > 0, got {o.lr!r}")
    _check(0 < o.lr_min <= o.lr, f"optim.lr_min: must be in (0, lr], got {o.lr_min!r}")
    _check(o.lr_factor > 1, f"optim.lr_factor: must be > 1, got {o.lr_factor!r}")
    _check(1 <= o.patience <= MAX_EPOCHS, f"optim.patience: must be from 1 to {MAX_EPOCHS}, got {o.patience!r}")
    _check(1 <= o.max_epochs <= MAX_EPOCHS, f"optim.max_epochs: must be from 1 to {MAX_EPOCHS}, got {o.max_epochs!r}")
    _check(1 <= o.batch_size <= MAX_BATCH, f"optim.batch_size: must be from 1 to {MAX_BATCH}, got {o.batch_size!r}")
    _check(1 <= o.min_batches <= MAX_BATCH, f"optim.min_batches: must be from 1 to {MAX_BATCH}, got {o.min_batches!r}")
    _check(o.clip > 0, f"optim.clip: must be > 0, got {o.clip!r}")
    h = cfg.hat
    _check(h.smax > 1, f"hat.smax: must be > 1, got {h.smax!r}")
    _check(h.lamb >= 0, f"hat.lamb: must be >= 0, got {h.lamb!r}")
    _check(h.thres_cosh > 0 and h.thres_emb > 0, "hat.thres_cosh and hat.thres_emb: must be > 0")
    d = cfg.prm
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
    c = cfg.cat
    _check(1 <= c.detect_epochs <= MAX_EPOCHS, f"cat.detect_epochs: must be from 1 to {MAX_EPOCHS}, "
           f"got {c.detect_epochs!r}")
    _check(1 <= c.heads <= m.hidden[-1] and m.hidden[-1] % c.heads == 0,
           f"cat.heads: must divide the last hidden layer's width ({m.hidden[-1]}), got {c.heads!r}")
    _check(c.kta_weight >= 0, f"cat.kta_weight: must be >= 0, got {c.kta_weight!r}")
    _check(0.0 <= c.attention_dropout < 1.0, f"cat.attention_dropout: must be in [0, 1), got {c.attention_dropout!r}")
    r = cfg.record
    _check(r.trajectory_every >= 1, f"record.trajectory_every: must be >= 1, got {r.trajectory_every!r}")
    _check(r.trajectory_dtype in ("float16", "float32"),
           f"record.trajectory_dtype: 'float16' or 'float32', got {r.trajectory_dtype!r}")
    _check(isinstance(r.projections, (tuple, list)) and all(p in ("pca", "umap") for p in r.projections),
           f"record.projections: subset of pca, umap, got {r.projections!r}")
    _check(cfg.ewc_lambda >= 0, f"ewc_lambda: must be >= 0, got {cfg.ewc_lambda!r}")
