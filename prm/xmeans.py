"""X-means clustering (Pelleg & Moore, 2000) on top of ``sklearn.cluster.KMeans``.

PRM uses this to cluster task embeddings (R points = tasks seen so far, 1..50;
M dims = layer width, 64..2000, so usually M >> R) and to decide which earlier
tasks are *dissimilar* to the newest one (:func:`dtd_call`, :func:`dissimilar_to`).
docs/xmeans.md has the derivation, the measurements quoted here and a table of
degenerate cases.

BIC variant (``VARIANT = "pm-perdim"``)
---------------------------------------
Model: k identical spherical Gaussians in M dims, mixing weights R_n / R.
For R points with labels/centres (SSE = sum of squared distances of every
point to its own centre, over all M dims)::

    sigma2 = max(SSE / (M * (R - k)), var_floor)       # per-dimension variance
    l_n    = R_n log(R_n / R)                           # mixing weight
             - (R_n M / 2) log(2 pi sigma2)             # normaliser, M dims
             - SSE_n / (2 sigma2)                       # Gaussian exponent
    p      = (k - 1) + M k + 1                          # weights, centres, variance
    BIC    = sum_n l_n - (p / 2) log R                  # penalty once per model

Why these choices:

* **Per-dimension variance** ``SSE / (M (R - k))``: SSE sums M coordinates with
  R - k degrees of freedom each, so this is the unbiased variance of one
  coordinate -- what the density ``(2 pi sigma2)^(-M/2)`` needs.  Pelleg &
  Moore's ``SSE / (R - k)`` is M times too large and makes the likelihood blind to M.
* **Exponent term** ``SSE_n / (2 sigma2)``, the exact value.  The paper's
  ``(R_n - k) / 2`` is a known erratum that rewards every extra cluster by about
  ``M (k^2 - k) / 2`` nats -- with M = 2000 it splits pure noise.
* ``log(2 pi)`` carries the factor M (the paper drops it; constant for fixed R, M).

Variance floor (:func:`default_var_floor` unless given): keeps the BIC finite
when a model has zero residual (identical points, duplicate children); relative
to X, so rescaling X changes no decision.  If ``R <= k``, ``sigma2 = var_floor``.

Algorithm
---------
1. Start with ``k_init = min(k_min, distinct points)`` centres (k = 1: the mean;
   otherwise KMeans with ``n_init`` restarts and ``random_state=seed``).
2. Improve-structure (one *round*): for every current cluster, in id order,
   run a local 2-means on the cluster's points only (``n_init`` restarts, seed
   derived from ``seed`` and the cluster id).  Keep the split when the BIC of
   the whole model with that cluster replaced by its two children exceeds the
   BIC of the current whole model (every candidate is judged against the model
   at the start of the round).  Children get fresh integer ids.
   Deviation from the paper, on purpose: Pelleg & Moore compare k=1 vs k=2 on
   the cluster's points alone.  For the 3-5 point clusters PRM sees that is
   unreliable (M=64: 2+3 separated points found 15% of the time, 3+3+3 never);
   the whole-model test pools the variance over all points, as the model says,
   and finds them 95-100%.  Both tests agree for the first split (k=1).
3. Improve-params: if any split was kept, refit KMeans on *all* points with the
   current centres as init (``n_init=1``); cluster ids follow their centres.
4. Repeat 2-3 until a round keeps nothing or k reaches ``k_max``.

A cluster whose membership has not changed since its last refused attempt is
not tried again (its 2-means seed depends only on ``seed`` and the cluster id,
so the answer would be identical).  A split is refused without a 2-means when
the cluster has fewer than ``max(3, min_split_size)`` points
(``"too-few-points"``: a 2-point cluster could only split into zero-residual
singletons), when it would take k past ``k_max`` (``"k-max"``), or when its
points are all identical (``"zero-variance"``).  BIC is asymptotic: for R = 3, 4
pure noise is sometimes split.

Decision record (:class:`SplitAttempt`): members are those *at the time of the
attempt* (improve-params may move points later); final cluster ids = root ids +
kept child ids - kept parent ids, so ``k == k_init + number of kept attempts``.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning

__all__ = [
    "SplitAttempt",
    "XMeansResult",
    "bic",
    "cluster_of",
    "default_var_floor",
    "dissimilar_to",
    "dtd_call",
    "undecided",
    "xmeans",
]

VARIANT = "pm-perdim"
_REL_FLOOR = 1e-12


def default_var_floor(X: np.ndarray) -> float:
    """Variance floor used when none is given: 1e-12 x mean(X**2), or 1e-12 when X is all zero.

    Relative so that scaling X by c scales every sigma2 (floored or not) by c^2,
    which shifts parent and children BIC by the same constant.
    """
    ms = float(np.mean(np.square(np.asarray(X, dtype=np.float64))))
    return max(_REL_FLOOR * ms, np.finfo(np.float64).tiny) if ms > 0.0 else _REL_FLOOR


def bic(X: np.ndarray, labels: np.ndarray, centers: np.ndarray, *, var_floor: float | None = None) -> float:
    """BIC (higher is better) of a k-cluster spherical-Gaussian model; see module doc.

    ``k = len(centers)``; empty clusters contribute nothing to the likelihood but
    are counted in the parameters.
    """
    X = np.asarray(X, dtype=np.float64)
    labels = np.asarray(labels)
    centers = np.asarray(centers, dtype=np.float64)
    if X.ndim != 2 or centers.ndim != 2 or centers.shape[1] != X.shape[1]:
        raise ValueError("X must be (R, M) and centers (k, M)")
    R, M = X.shape
    k = centers.shape[0]
    if R == 0 or k == 0 or labels.shape != (R,):
        raise ValueError("need R >= 1 points, k >= 1 centres and one label per point")
    if labels.min() < 0 or labels.max() >= k:
        raise ValueError("labels must lie in 0..k-1")
    floor = default_var_floor(X) if var_floor is None else float(var_floor)
    if not floor > 0.0:
        raise ValueError("var_floor must be > 0")

    sq = np.sum(np.square(X - centers[labels]), axis=1)
    sse_n = np.bincount(labels, weights=sq, minlength=k)
    r_n = np.bincount(labels, minlength=k).astype(np.float64)
    sse = float(sse_n.sum())
    sigma2 = max(sse / (M * (R - k)), floor) if R > k else floor

    nz = r_n > 0
    loglik = float(
        np.sum(r_n[nz] * np.log(r_n[nz] / R))
        - R * M / 2.0 * math.log(2.0 * math.pi * sigma2)
        - sse / (2.0 * sigma2)
    )
    p = (k - 1) + M * k + 1
    return loglik - p / 2.0 * math.log(R)


@dataclass(frozen=True)
class SplitAttempt:
    """One improve-structure decision.

    ``members`` are the parent's points at the time of the attempt (a later
    improve-params may move points).  ``parent_bic`` is the whole-model BIC
    before the split, ``children_bic`` the whole-model BIC with this split;
    both (and ``children``) are None when no 2-means was run.  ``child_ids``
    is set only when the split is kept.
    """

    round: int
    parent: int
    members: tuple[int, ...]
    children: tuple[tuple[int, ...], tuple[int, ...]] | None
    child_ids: tuple[int, int] | None
    parent_bic: float | None
    children_bic: float | None
    kept: bool
    reason: str  # "bic-improved" | "bic-not-improved" | "too-few-points" | "zero-variance" | "k-max"

    def to_dict(self) -> dict[str, Any]:
        return {
            "round": int(self.round),
            "parent": int(self.parent),
            "members": [int(i) for i in self.members],
            "children": None if self.children is None else [[int(i) for i in c] for c in self.children],
            "child_ids": None if self.child_ids is None else [int(i) for i in self.child_ids],
            "parent_bic": _finite_or_none(self.parent_bic),
            "children_bic": _finite_or_none(self.children_bic),
            "kept": bool(self.kept),
            "reason": str(self.reason),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SplitAttempt":
        ch = d["children"]
        return cls(
            round=int(d["round"]),
            parent=int(d["parent"]),
            members=tuple(int(i) for i in d["members"]),
            children=None if ch is None else (tuple(int(i) for i in ch[0]), tuple(int(i) for i in ch[1])),
            child_ids=None if d["child_ids"] is None else (int(d["child_ids"][0]), int(d["child_ids"][1])),
            parent_bic=None if d["parent_bic"] is None else float(d["parent_bic"]),
            children_bic=None if d["children_bic"] is None else float(d["children_bic"]),
            kept=bool(d["kept"]),
            reason=str(d["reason"]),
        )


@dataclass(frozen=True, eq=False)
class XMeansResult:
    """Outcome of :func:`xmeans`.

    ``labels[i]`` is in 0..k-1, numbered by first appearance (point 0 is in
    cluster 0); ``centers[j]`` and ``cluster_ids[j]`` (the stable id used in
    ``attempts``) belong to label j.  Root ids are ``0..k_init-1``.
    Equality compares :meth:`to_dict` output.
    """

    labels: np.ndarray
    centers: np.ndarray
    k: int
    bic: float
    attempts: tuple[SplitAttempt, ...]
    variant: str
    cluster_ids: tuple[int, ...]
    k_init: int
    var_floor: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (lists/ints/floats/str/None only)."""
        if not math.isfinite(self.bic) or not np.all(np.isfinite(self.centers)):
            raise ValueError("non-finite value in XMeansResult")
        return {
            "labels": [int(v) for v in self.labels],
            "centers": [[float(v) for v in row] for row in self.centers],
            "k": int(self.k),
            "bic": float(self.bic),
            "attempts": [a.to_dict() for a in self.attempts],
            "variant": str(self.variant),
            "cluster_ids": [int(v) for v in self.cluster_ids],
            "k_init": int(self.k_init),
            "var_floor": float(self.var_floor),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "XMeansResult":
        labels = np.asarray(d["labels"], dtype=np.int64)
        centers = np.asarray(d["centers"], dtype=np.float64).reshape(int(d["k"]), -1)
        return _make_result(
            labels=labels,
            centers=centers,
            bic_value=float(d["bic"]),
            attempts=tuple(SplitAttempt.from_dict(a) for a in d["attempts"]),
            variant=str(d["variant"]),
            cluster_ids=tuple(int(v) for v in d["cluster_ids"]),
            k_init=int(d["k_init"]),
            var_floor=float(d["var_floor"]),
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, XMeansResult) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


def _finite_or_none(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    if not math.isfinite(x):
        raise ValueError("non-finite BIC in decision record")
    return x


def _make_result(*, labels, centers, bic_value, attempts, variant, cluster_ids, k_init, var_floor) -> XMeansResult:
    labels = np.array(labels, dtype=np.int64)
    centers = np.array(centers, dtype=np.float64)
    labels.setflags(write=False)
    centers.setflags(write=False)
    return XMeansResult(
        labels=labels,
        centers=centers,
        k=int(centers.shape[0]),
        bic=float(bic_value),
        attempts=tuple(attempts),
        variant=variant,
        cluster_ids=tuple(cluster_ids),
        k_init=int(k_init),
        var_floor=float(var_floor),
    )


def _kmeans(X: np.ndarray, k: int, *, init: np.ndarray | str, n_init: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """KMeans wrapper: deterministic, silent about duplicate-point convergence."""
    km = KMeans(n_clusters=k, init=init, n_init=n_init if isinstance(init, str) else 1, random_state=seed)
    with warnings.catch_warnings():
        # sklearn warns when there are fewer distinct points than k; callers
        # guard against that, this is the belt to those braces.
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = km.fit_predict(X)
    return np.asarray(labels, dtype=np.int64), np.asarray(km.cluster_centers_, dtype=np.float64)


def _child_seed(seed: int, cluster_id: int) -> int:
    """Seed of the local 2-means for one cluster id: independent of the round,
    so retrying an unchanged cluster would give the same answer."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(cluster_id)]).generate_state(1)[0] & 0x7FFFFFFF)


def _n_distinct(X: np.ndarray) -> int:
    return int(np.unique(X, axis=0).shape[0])


def xmeans(
    X: np.ndarray,
    *,
    k_min: int = 1,
    k_max: int | None = None,
    seed: int = 0,
    n_init: int = 10,
    var_floor: float | None = None,
    min_split_size: int = 3,
) -> XMeansResult:
    """Cluster the rows of ``X`` (R, M) with X-means; see the module docstring.

    ``k_max`` defaults to R.  ``n_init`` is the number of KMeans restarts for
    the initial k_min-means and each local 2-means.  ``var_floor`` defaults to
    :func:`default_var_floor`.  Clusters with fewer than ``min_split_size``
    points (never less than 3) are not split; raise it to suppress the
    unreliable splits of 3-4 point clusters (see docs/xmeans.md).  Same input +
    seed gives a bit-identical result.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError("X must be a non-empty 2-D array (R, M)")
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains nan or inf")
    if k_min < 1 or n_init < 1:
        raise ValueError("k_min and n_init must be >= 1")
    floor = default_var_floor(X) if var_floor is None else float(var_floor)
    k_init = min(int(k_min), _n_distinct(X))
    k_max = max(X.shape[0] if k_max is None else int(k_max), k_init)

    labels, centers = _initial_model(X, k_init, n_init=n_init, seed=seed)
    ids = list(range(k_init))  # ids[j] = stable id of centers[j]
    search = _Search(X=X, floor=floor, k_max=k_max, seed=seed, n_init=n_init,
                     min_split_size=min_split_size, next_id=k_init)
    rnd = 0
    while len(ids) < k_max:
        kept = search.improve_structure(labels, centers, ids, rnd=rnd)
        if kept is None:
            break
        new_centers, ids = kept
        # improve-params: global refit from the kept centres; cluster ids follow their centres
        labels, centers = _kmeans(X, len(ids), init=np.asarray(new_centers), n_init=1, seed=seed)
        rnd += 1

    labels, centers, final_ids = _by_first_appearance(labels, centers, ids)
    return _make_result(
        labels=labels,
        centers=centers,
        bic_value=bic(X, labels, centers, var_floor=floor),
        attempts=search.attempts,
        variant=VARIANT,
        cluster_ids=final_ids,
        k_init=k_init,
        var_floor=floor,
    )


def _initial_model(X: np.ndarray, k_init: int, *, n_init: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and centres to start from: the mean for k = 1 (no KMeans call, so no
    RNG draw), otherwise a k-means++ KMeans with ``n_init`` restarts."""
    if k_init == 1:
        return np.zeros(X.shape[0], dtype=np.int64), X.mean(axis=0, keepdims=True)
    return _kmeans(X, k_init, init="k-means++", n_init=n_init, seed=seed)


@dataclass(kw_only=True)
class _Search:
    """Settings and bookkeeping of one :func:`xmeans` call that outlive a round, kept
    together so a round and a split attempt read like the algorithm, not like ten arguments."""

    X: np.ndarray
    floor: float
    k_max: int
    seed: int
    n_init: int
    min_split_size: int
    next_id: int  # the id the next kept child gets; ids are never reused
    refused: dict[int, tuple[int, ...]] = field(default_factory=dict)  # id -> members at its last refused attempt
    attempts: list[SplitAttempt] = field(default_factory=list)

    def improve_structure(self, labels: np.ndarray, centers: np.ndarray, ids: list[int], *,
                          rnd: int) -> tuple[list[np.ndarray], list[int]] | None:
        """One improve-structure round over the clusters in id order.

        Returns the centres and ids of the model with every kept split applied
        (children replace their parent in place), or None when nothing was kept.
        Every candidate is judged against the model at the start of the round.
        """
        new_centers: list[np.ndarray] = []
        new_ids: list[int] = []
        kept_any = False
        for j, cid in enumerate(ids):
            members = tuple(int(i) for i in np.flatnonzero(labels == j))
            if self.refused.get(cid) == members:  # same points, same seed: same answer as last time
                new_centers.append(centers[j])
                new_ids.append(cid)
                continue
            full = len(new_ids) + (len(ids) - j) >= self.k_max
            att = self.try_split(labels, centers, j, cid, members, rnd=rnd, full=full)
            self.attempts.append(att)
            if att.kept:
                assert att.children is not None and att.child_ids is not None
                for child, child_id in zip(att.children, att.child_ids):
                    new_centers.append(self.X[list(child)].mean(axis=0))
                    new_ids.append(child_id)
                self.next_id += 2
                kept_any = True
            else:
                self.refused[cid] = members
                new_centers.append(centers[j])
                new_ids.append(cid)
        return (new_centers, new_ids) if kept_any else None

    def try_split(self, labels: np.ndarray, centers: np.ndarray, j: int, cid: int, members: tuple[int, ...], *,
                  rnd: int, full: bool) -> SplitAttempt:
        """Decide whether cluster ``j`` (id ``cid``, points ``members``) splits in two.

        The 2-means runs on the cluster's points only; the BIC comparison is made
        on the whole model (see :func:`_split_bics` and the module docstring for why).
        ``full``: splitting would take k past ``k_max``.
        """

        def refuse(reason: str) -> SplitAttempt:
            return SplitAttempt(rnd, cid, members, None, None, None, None, False, reason)

        if len(members) < max(3, self.min_split_size):
            return refuse("too-few-points")
        if full:
            return refuse("k-max")
        Xc = self.X[list(members)]
        if _n_distinct(Xc) < 2:
            return refuse("zero-variance")
        child_labels, child_centers = _kmeans(Xc, 2, init="k-means++", n_init=self.n_init,
                                              seed=_child_seed(self.seed, cid))
        a = tuple(members[i] for i in np.flatnonzero(child_labels == 0))
        b = tuple(members[i] for i in np.flatnonzero(child_labels == 1))
        parent_bic, children_bic = _split_bics(self.X, labels, centers, j, b, child_centers, floor=self.floor)
        kept = bool(children_bic > parent_bic) and len(a) > 0 and len(b) > 0
        return SplitAttempt(
            rnd, cid, members, (a, b), (self.next_id, self.next_id + 1) if kept else None,
            parent_bic, children_bic, kept, "bic-improved" if kept else "bic-not-improved",
        )


def _split_bics(X: np.ndarray, labels: np.ndarray, centers: np.ndarray, j: int, moved: tuple[int, ...],
                child_centers: np.ndarray, *, floor: float) -> tuple[float, float]:
    """Whole-model BIC of the current k clusters, and of the same model with cluster
    ``j`` replaced by its two children: child 0 takes over label j, child 1 (the
    points ``moved``) becomes label k.  Pooling the variance over all points is
    what makes 3-5 point clusters splittable (module docstring, step 2)."""
    k = centers.shape[0]
    split_labels = labels.copy()
    split_labels[list(moved)] = k
    split_centers = np.vstack([centers, child_centers[1:2]])
    split_centers[j] = child_centers[0]
    return bic(X, labels, centers, var_floor=floor), bic(X, split_labels, split_centers, var_floor=floor)


def _by_first_appearance(labels: np.ndarray, centers: np.ndarray,
                         ids: list[int]) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Renumber clusters so that labels appear in order 0, 1, ... along the points
    (point 0 is in cluster 0): the result then does not depend on KMeans' centre order."""
    order: list[int] = []
    for lab in labels:
        if int(lab) not in order:
            order.append(int(lab))
    order += [j for j in range(len(ids)) if j not in order]  # (empty clusters: not expected)
    remap = np.empty(len(ids), dtype=np.int64)
    remap[order] = np.arange(len(ids))
    return remap[labels], centers[order], tuple(ids[j] for j in order)


def cluster_of(result: XMeansResult, index: int) -> int:
    """Cluster label (0..k-1) of point ``index`` (negative indices allowed)."""
    R = result.labels.shape[0]
    if not -R <= index < R:
        raise IndexError(f"point index {index} out of range for {R} points")
    return int(result.labels[index])


def dissimilar_to(result: XMeansResult, index: int) -> list[int]:
    """Indices (ascending) of points NOT in the same cluster as point ``index``.

    PRM calls this with ``index=-1`` (the newest task) to get the dissimilar-task set.
    """
    own = cluster_of(result, index)
    return [int(i) for i in np.flatnonzero(result.labels != own)]


def undecided(result: XMeansResult) -> bool:
    """True when no split could even be tried (two tasks: a 2-point cluster cannot be split),
    so X-means' single cluster is a default, not a finding."""
    return all(a.reason == "too-few-points" for a in result.attempts)


def dtd_call(result: XMeansResult, task: int, *, when_undecided: str) -> list[int]:
    """The earlier tasks X-means calls dissimilar to ``task`` (the last point), following
    ``PRMConfig.undecided`` when the result is :func:`undecided`: ``dissimilar`` calls every
    earlier task dissimilar (HAT's choice), ``similar`` keeps X-means' single cluster."""
    if undecided(result) and when_undecided == "dissimilar":
        return list(range(task))
    return dissimilar_to(result, task)
