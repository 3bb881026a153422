"""What the explorer and the CLI compute from recorded runs, in one pure module (no streamlit,
no plotly): the truth every DTD call is judged against, per-run metrics, pair evidence, the
runs that belong together (a run's siblings, its like runs of other seeds, the spread over
them). Views and figures ask here instead of each re-deriving its own copy, so one number
means the same thing wherever it is shown. Compare's tables, which need pandas, are in
:mod:`prm.compare` (the engine imports this module for :func:`true_groups`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.cluster import KMeans

from prm import methods, metrics
from prm.similarity import features, pairwise
from prm.xmeans import bic

if TYPE_CHECKING:  # types only: the run package may ask here for its summary without a cycle
    from prm.run import Run, RunParent, RunState


def true_groups(tasks: Sequence[Mapping[str, Any]]) -> list[int]:
    """Ground-truth similarity as group ids: two tasks are similar when they share a family
    *and* a label set (writers of the same ten digits, one image style). Class-split tasks
    share the family 'classes' but not their classes, so each is its own group: dissimilar
    to every other task, as in the paper's dissimilar sequences."""
    ids: dict[tuple[str, tuple[int, ...]], int] = {}
    return [ids.setdefault((t["family"], tuple(t["classes"])), len(ids)) for t in tasks]


def judged_right(*, groups: list[int], task: int, dissimilar: Sequence[int]) -> dict[int, bool]:
    """Each earlier task's call, right or wrong: a call is right when the task was called
    dissimilar exactly when its true group differs from ``task``'s (see :func:`true_groups`).
    Every view that marks a decision right or wrong asks this one function."""
    called = set(dissimilar)
    return {i: (i in called) == (groups[i] != groups[task]) for i in range(task)}


def calls_right(*, groups: list[int], task: int, dissimilar: Sequence[int]) -> float:
    """Fraction of the earlier tasks DTD judged right (:func:`judged_right`)."""
    if task == 0:
        raise ValueError("the first task has no earlier task to judge")
    return sum(judged_right(groups=groups, task=task, dissimilar=dissimilar).values()) / task


# ----------------------------------------------------------------------------- metrics per run

def matrix_metrics(R: np.ndarray, *, stl_diag: np.ndarray | None = None,
                   tasks: Sequence[int] | None = None) -> dict[str, float | None]:
    """Acc, just-learnt accuracy, BWT and FWT of one accuracy matrix (``prm.metrics``), over
    the learnt ones of ``tasks`` (all learnt tasks when None), None where a value cannot be
    computed: no task of them learnt, or (FWT) no single-task accuracy known for one of them.
    Every table and chart of these numbers asks here, so an Acc means one thing everywhere."""
    R = np.asarray(R, dtype=float)
    done = metrics.completed_rows(R)
    out: dict[str, float | None] = {"acc": None, "just_learnt": None, "bwt": None, "fwt": None, "tasks_done": done}
    picked = list(range(done)) if tasks is None else [t for t in tasks if t < done]
    if not picked:
        return out
    chosen = None if tasks is None else picked
    out.update(acc=metrics.average_accuracy(R, chosen), just_learnt=metrics.just_learnt(R, chosen),
               bwt=metrics.backward_transfer(R, chosen))
    if stl_diag is not None:
        stl = np.asarray(stl_diag, dtype=float)
        if max(picked) < len(stl) and not np.isnan(stl[picked]).any():
            out["fwt"] = metrics.forward_transfer(R, stl, chosen)
    return out


def run_seconds(state: RunState) -> float | None:
    """CT: the run's wall time when it has ended, else the time of its finished tasks so far."""
    if state.end is not None and state.end.seconds is not None:
        return state.end.seconds
    if state.task_ends:
        return float(sum(sum(r.seconds.values()) for r in state.task_ends.values()))
    return None


def run_metrics(state: RunState, *, stl: RunState | None = None) -> dict[str, float | None]:
    """Acc, BWT, FWT (against the STL run of the same sequence and seed, if given: only when
    it has learnt every task this run has) and CT (:func:`run_seconds`) of one run."""
    stl_diag = None if stl is None else np.diag(stl.accuracy_matrix("test"))
    values = matrix_metrics(state.accuracy_matrix("test"), stl_diag=stl_diag)
    return {"acc": values["acc"], "bwt": values["bwt"], "fwt": values["fwt"], "ct": run_seconds(state),
            "tasks_done": values["tasks_done"]}


def families(tasks: Sequence[Mapping[str, Any]]) -> dict[str, list[int]]:
    """Family -> its tasks, in order of first appearance."""
    out: dict[str, list[int]] = {}
    for t, task in enumerate(tasks):
        out.setdefault(task["family"], []).append(t)
    return out


def family_metrics(state: RunState, *, stl: RunState | None = None) -> dict[str, dict[str, float | None]]:
    """Per family (:func:`families`): BWT over its learnt tasks and FWT over those of them
    whose single-task accuracy the STL run knows (None where neither is known)."""
    stl_diag = None
    stl_R = None if stl is None else stl.accuracy_matrix("test")
    if stl_R is not None and metrics.completed_rows(stl_R):
        stl_diag = np.diag(stl_R)
    R = state.accuracy_matrix("test")
    done = metrics.completed_rows(R)
    out = {}
    for fam, tasks in families(state.tasks).items():
        learnt = [t for t in tasks if t < done]
        known = [t for t in learnt if stl_diag is not None and t < len(stl_diag) and not np.isnan(stl_diag[t])]
        out[fam] = {"bwt": matrix_metrics(R, tasks=learnt)["bwt"],
                    "fwt": matrix_metrics(R, stl_diag=stl_diag, tasks=known)["fwt"]}
    return out


# ----------------------------------------------------------------------------- the baselines' own records

def unpack_mask(bits: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A weight mask recorded as ``np.packbits`` of its boolean (out x in) matrix row by row
    (SupSup's supermasks: (out, ceil(in / 8)) bytes), back as a boolean (out x in) matrix."""
    return np.unpackbits(np.asarray(bits, dtype=np.uint8), axis=1, count=shape[1]).astype(bool)


def unit_edge_jaccard(out_a: np.ndarray, out_b: np.ndarray, in_a: np.ndarray, in_b: np.ndarray) -> float:
    """Jaccard overlap of the weights two HAT-style tasks use, from their unit masks: a task
    uses the weight from unit i to unit j when it uses both (boolean vectors of a layer's
    outputs and of its inputs), so the shared weights are |out_a ∩ out_b| x |in_a ∩ in_b| and
    weights compare with SupSup's supermasks on one scale (0 when neither uses any)."""
    inter = float(np.sum(out_a & out_b)) * float(np.sum(in_a & in_b))
    union = float(np.sum(out_a)) * float(np.sum(in_a)) + float(np.sum(out_b)) * float(np.sum(in_b)) - inter
    return inter / union if union else 0.0


def chance_jaccard(density: float) -> float:
    """The Jaccard overlap two independent random masks of one ``density`` (the fraction of
    weights kept) have on average: d^2 / (2d - d^2) = d / (2 - d)."""
    return density / (2.0 - density) if density > 0 else 0.0


def path_reuse(paths: Sequence[np.ndarray]) -> list[dict[str, int]]:
    """Per task of a PathNet run, from its (layers x modules) 0/1 paths in order: the modules
    on its path, how many of them an earlier task's path had already frozen (reused, what it
    transfers) and how many it trained itself (new)."""
    frozen = np.zeros_like(np.asarray(paths[0], dtype=bool)) if len(paths) else None
    out = []
    for path in paths:
        on = np.asarray(path, dtype=bool)
        reused = int(np.sum(on & frozen))
        out.append({"modules": int(on.sum()), "reused": reused, "new": int(on.sum()) - reused})
        frozen = frozen | on
    return out


def neighbour_agreement(vectors: np.ndarray, labels: Sequence[Any]) -> tuple[int, int, float]:
    """Do vectors group by label? (how many vectors have a nearest other vector, by cosine,
    of their own label; how many were asked; how many a random neighbour would give on average.)
    Vectors whose label no other vector has are not asked."""
    X = np.asarray(vectors, dtype=np.float64)
    n = len(X)
    if n < 2:
        return 0, 0, 0.0
    unit = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    hits, asked, chance = 0, 0, 0.0
    for i in range(n):
        same = sum(1 for j in range(n) if j != i and labels[j] == labels[i])
        if not same:
            continue
        asked += 1
        hits += labels[int(np.argmax(similarity[i]))] == labels[i]
        chance += same / (n - 1)
    return hits, asked, chance


# ----------------------------------------------------------------------------- pair evidence

def jaccard(a: np.ndarray, b: np.ndarray, threshold: float = 0.5) -> float:
    """Overlap of two binarised masks: |a ∩ b| / |a ∪ b| (0 when both are empty)."""
    a, b = np.asarray(a) > threshold, np.asarray(b) > threshold
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def _proposal(X: np.ndarray, labels: np.ndarray, centers: np.ndarray, i: int, j: int):
    """X-means' alternative for the pair: split their shared cluster (2-means seeded at the
    two tasks) or join their two clusters; the new labels, centres and what was changed."""
    if labels[i] == labels[j]:
        members = np.flatnonzero(labels == labels[i])
        km = KMeans(n_clusters=2, init=X[[i, j]], n_init=1).fit(X[members])
        new_labels = labels.copy()
        new_labels[members[km.labels_ == 1]] = labels.max() + 1
        new_centers = np.vstack([centers, km.cluster_centers_[1]])
        new_centers[labels[i]] = km.cluster_centers_[0]
        return new_labels, new_centers, "separating them (2-means on their cluster, seeded at the two tasks)"
    merged = np.where(labels == labels[j], labels[i], labels)
    _, new_labels = np.unique(merged, return_inverse=True)
    new_centers = np.array([X[new_labels == c].mean(axis=0) for c in range(new_labels.max() + 1)])
    return new_labels, new_centers, "joining their two clusters"


def pair_evidence(run: Run, step: int, layer: int, i: int, j: int) -> dict[str, Any]:
    """Why tasks i and j (both <= step) ended in the same or different clusters at ``step``.

    Returns their distance against the spread inside clusters, their masks' Jaccard overlap
    per layer, and the whole-model BIC change of separating them (if together) or joining
    their clusters (if apart): X-means keeps a split only when it raises the BIC. All of it is
    measured on what X-means clustered: the embeddings as ``PRMConfig.features`` turned them.
    """
    record = run.state.dtd[step].layers[layer]["xmeans"]
    X = features(np.asarray(run.dtd_embeddings(step, layer), dtype=float),
                 run.state.config.get("prm", {}).get("features", "raw"))
    labels = np.asarray(record["labels"])
    centers = np.array([X[labels == c].mean(axis=0) for c in range(record["k"])])  # KMeans centres = means
    floor = record["var_floor"]
    dist = pairwise(X, "euclidean")
    pairs = [(a, b) for a in range(len(X)) for b in range(a + 1, len(X))]
    within = [dist[a, b] for a, b in pairs if labels[a] == labels[b]]
    current = bic(X, labels, centers, var_floor=floor)
    new_labels, new_centers, change = _proposal(X, labels, centers, i, j)
    proposed = bic(X, new_labels, new_centers, var_floor=floor)
    overlap = {}
    for l in range(len(run.state.dtd[step].layers)):
        mi, mj = run.mask(i, l), run.mask(j, l)
        overlap[f"l{l}"] = None if mi is None or mj is None else jaccard(mi, mj)
    return {
        "together": bool(labels[i] == labels[j]), "distance": float(dist[i, j]),
        "within_mean": float(np.mean(within)) if within else None,
        "within_max": float(np.max(within)) if within else None,
        "between_mean": float(np.mean([dist[a, b] for a, b in pairs if labels[a] != labels[b]]))
        if len(set(labels)) > 1 else None,
        "cosine": float(pairwise(X[[i, j]], "cosine")[0, 1]),
        "jaccard": overlap, "bic_now": float(current), "bic_change": float(proposed - current), "change": change,
    }


# ----------------------------------------------------------------------------- runs that belong together

BASELINE = methods.with_role("baseline").name
"""HAT: what a method's gain is measured over (the Story's step 2, the seed spread)."""
SINGLE_TASK = methods.with_role("single-task").name
"""STL: each task learnt alone, FWT's reference."""
LOWER_BOUND = methods.with_role("lower-bound").name
UPPER_BOUND = methods.with_role("upper-bound").name
TOLD_WITH = (BASELINE, SINGLE_TASK, LOWER_BOUND, UPPER_BOUND)
"""The siblings every story loads besides the open run and its DTD run: the references the
steps measure against. Other listed siblings (PRM beside PRM+, say) are named, not loaded,
which keeps the first render under a second."""
CALL_METHODS = tuple(m.name for m in methods.REGISTRY.values() if m.transfer_tests)
"""Methods without DTD whose own similarity calls the Story sets beside DTD's (CAT's transfer
tests): loaded when listed, never reported missing (CAT is slow to train, and the story is
complete without it)."""


@dataclass(frozen=True, kw_only=True)
class Listed:
    """A listed run as far as choosing runs to tell or average together needs it: its
    ``sequence``, ``method``, ``seed``, task count, final ``acc`` and ``status`` (finished,
    running, stopped, failed, unreadable), its ``config`` without the seed (canonical JSON,
    :func:`prm.compare.config_key`: runs that differ only in seed share it), its ``setup``
    (:func:`prm.compare.setup_key`: runs that can stand side by side share it) and a what-if
    run's ``parent`` link. The explorer's picker row (``explorer.catalog.RunEntry``) is one."""

    key: str
    sequence: str | None
    method: str | None
    seed: int | None
    n_tasks: int | None
    acc: float | None
    status: str
    config: str | None = None
    setup: str | None = None
    parent: RunParent | None = None


def siblings(entry: Listed, entries: Sequence[Listed]) -> dict[str, Listed]:
    """Method -> the listed run of the same sequence, seed and task count (the open run for
    its own method), never a what-if run (its decision was forced). Preferred: the same
    set-up as the open run (network, optimiser, HAT's settings: ``Listed.setup``), then a
    finished run; among equals the first listed (the user's runs come before the samples)."""
    out: dict[str, Listed] = {}
    order = [entry.method, *methods.STORY_SIBLINGS, *methods.DTD_PREFERENCE, *CALL_METHODS]

    def rank(e: Listed) -> tuple[bool, bool]:
        return e.setup == entry.setup, e.status == "finished"

    for e in entries:
        if (e.status == "unreadable" or e.parent is not None or e.sequence != entry.sequence
                or e.seed != entry.seed or e.n_tasks != entry.n_tasks or e.method not in order[1:]):
            continue
        held = out.get(e.method)
        if held is None or rank(e) > rank(held):
            out[e.method] = e
    out[entry.method] = entry
    return dict(sorted(out.items(), key=lambda kv: order.index(kv[0])))


def missing(entry: Listed, found: Mapping[str, Listed]) -> list[str]:
    """The Story's sibling methods with no listed run, in the story's order."""
    return [m for m in methods.STORY_SIBLINGS if m not in found and m != entry.method]


def dtd_sibling(method: str, found: Mapping[str, object]) -> str | None:
    """The method whose DTD decisions the story shows: the open run's own when it runs DTD,
    else the first PRM-family sibling present (None: there is none)."""
    if methods.get(method).runs_dtd:
        return method
    return next((m for m in methods.DTD_PREFERENCE if m in found), None)


def told_with(method: str, found: Mapping[str, object]) -> list[str]:
    """The methods the story loads, in the order they are shown: the open run's, its DTD
    stand-in (:func:`dtd_sibling`), CAT (whose calls step 3 compares) and the reference
    siblings (:data:`TOLD_WITH`) that are listed."""
    dtd = dtd_sibling(method, found)
    wanted = [method, *([dtd] if dtd else []), *CALL_METHODS, *TOLD_WITH]
    return [m for m in dict.fromkeys(wanted) if m in found]


def like_runs(entry: Listed, entries: Sequence[Listed]) -> list[Listed]:
    """``entry`` and the finished runs of its sequence, method, task count and configuration
    with other seeds, one per distinct seed: what the seed spread is taken over."""
    out, seeds = [entry], {entry.seed}
    for e in entries:
        if (e.status == "finished" and e.seed not in seeds and e.sequence == entry.sequence
                and e.method == entry.method and e.n_tasks == entry.n_tasks and e.config == entry.config):
            out.append(e)
            seeds.add(e.seed)
    return out


def stl_of(entry: Listed, entries: Sequence[Listed]) -> Listed | None:
    """The finished STL run of ``entry``'s sequence, seed and task count (FWT's reference),
    one of the same set-up first."""
    found = [e for e in entries if e.method == SINGLE_TASK and e.status == "finished"
             and e.sequence == entry.sequence and e.seed == entry.seed and e.n_tasks == entry.n_tasks]
    return next((e for e in found if e.setup == entry.setup), found[0] if found else None)


# ----------------------------------------------------------------------------- the spread over seeds

@dataclass(frozen=True, kw_only=True)
class SeedSpread:
    """Which seed the Story tells among the listed seeds of its experiment: the told ``seed``,
    each seed's Acc (``own``) and its HAT sibling's (``hat``: None when the method is HAT
    itself), and ``gains`` (own − HAT, or own Acc for HAT) over the seeds that have one. One
    seed is one draw: a reader must know whether the told seed is typical."""

    seed: int
    own: Mapping[int, float]
    hat: Mapping[int, float] | None
    gains: Mapping[int, float]

    @property
    def ranked(self) -> tuple[int, ...]:
        """The seeds with a gain, lowest gain first (ties by seed, as ``median_seed`` ranks)."""
        return tuple(sorted(self.gains, key=lambda s: (self.gains[s], s)))

    @property
    def median(self) -> int | None:
        """The representative seed (``prm.metrics.median_seed``, the rule that picks the bundled
        samples and the app's default run: with an even number of seeds the lower middle, a seed
        that exists and never flatters the method); None without a ranked seed."""
        return metrics.median_seed(dict(self.gains)) if self.gains else None

    @property
    def is_median(self) -> bool:
        """The told seed's gain equals the median's (a tie is as typical as the median)."""
        return self.median is not None and self.seed in self.gains and self.gains[self.seed] == self.gains[self.median]


def seed_spread(own: Mapping[int, float], hat: Mapping[int, float] | None, *, seed: int) -> SeedSpread:
    """Rank the seeds of ``own`` by their gain over ``hat`` of the same seed (a seed without a
    HAT run is left out of the ranking, not of ``own``'s mean); ``hat`` None ranks by Acc."""
    gains = {s: a - hat[s] for s, a in own.items() if s in hat} if hat is not None else dict(own)
    return SeedSpread(seed=seed, own=dict(own), hat=None if hat is None else dict(hat), gains=gains)


def spread_of(entry: Listed, entries: Sequence[Listed]) -> SeedSpread | None:
    """:func:`seed_spread` over ``entry``'s like runs (:func:`like_runs`: same sequence, method,
    task count and configuration) and each one's finished HAT sibling (:func:`siblings`); None
    for an unfinished run, whose Acc is not final."""
    if entry.status != "finished" or entry.acc is None or entry.seed is None:
        return None
    runs = [e for e in like_runs(entry, entries) if e.acc is not None and e.seed is not None]
    own = {e.seed: float(e.acc) for e in runs}
    if entry.method == BASELINE:
        return seed_spread(own, None, seed=entry.seed)
    hat = {}
    for e in runs:
        found = siblings(e, entries).get(BASELINE)
        if found is not None and found.status == "finished" and found.acc is not None:
            hat[e.seed] = float(found.acc)
    return seed_spread(own, hat, seed=entry.seed)
