"""How DTD turns task embeddings into a dissimilar set: the representation, then the rule.

The paper clusters the raw embeddings e_1..e_t of a layer with X-means (``prm.xmeans``). The
study in ``docs/dtd-study.md`` found that the family shows in which units a task uses and in
the direction of e, not in its length, which dominates X-means' Euclidean geometry. So two
rules on cosine distance that need no number of clusters are offered beside it: a cut at a
distance from the new task, and average-linkage clustering cut at the same distance.
Everything here is a pure function of a (tasks x units) array.
"""

from __future__ import annotations

import numpy as np

FEATURES = ("raw", "binary", "standardised", "unit")
RULES = ("linkage", "cut")  # the rules besides X-means (which lives in prm.xmeans)


def features(table: np.ndarray, kind: str) -> np.ndarray:
    """The representation DTD clusters, one row per task (see ``PRMConfig.features``)."""
    table = np.asarray(table, dtype=np.float64)
    if kind == "raw":
        return table
    if kind == "binary":
        return (table > 0).astype(np.float64)
    if kind == "standardised":
        spread = table.std(axis=0)
        return (table - table.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    if kind == "unit":
        norms = np.linalg.norm(table, axis=1, keepdims=True)
        return table / np.where(norms > 0, norms, 1.0)
    raise ValueError(f"unknown features {kind!r}; choose one of {', '.join(FEATURES)}")


def cosine_distances(points: np.ndarray) -> np.ndarray:
    """1 - cos between every pair of rows; a zero row is at distance 1 from every other row."""
    points = np.asarray(points, dtype=np.float64)
    norms = np.linalg.norm(points, axis=1)
    safe = np.where(norms > 0, norms, 1.0)
    cos = (points @ points.T) / np.outer(safe, safe)
    cos[norms == 0, :] = 0.0
    cos[:, norms == 0] = 0.0
    dist = np.clip(1.0 - cos, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    return dist


def pairwise(points: np.ndarray, metric: str) -> np.ndarray:
    """Euclidean distance (what X-means uses) or cosine similarity between embeddings: what
    the Clustering view draws and ``prm.analysis.pair_evidence`` measures a pair by."""
    points = np.asarray(points, dtype=float)
    if metric == "cosine":
        norm = np.linalg.norm(points, axis=1, keepdims=True)
        unit = points / np.where(norm == 0, 1, norm)
        return unit @ unit.T
    diff = points[:, None, :] - points[None, :, :]
    return np.sqrt((diff ** 2).sum(-1))


def linkage_merges(dist: np.ndarray, *, below: float = np.inf) -> list[tuple[int, int, float]]:
    """Average-linkage agglomeration on a distance matrix, merge by merge: ``(a, b, d)`` means
    cluster ``b`` of the list as it then stands (singletons in row order at first) joined
    cluster ``a`` (a < b) at average distance ``d`` between their members. Stops before the first
    merge at ``d >= below``. Heights never fall (average linkage is monotone), so cutting the tree
    at a threshold keeps exactly the merges below it: one sequence serves the rule and its drawing."""
    clusters = [[i] for i in range(len(dist))]
    merges = []
    while len(clusters) > 1:
        best, pair = np.inf, None
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                d = float(dist[np.ix_(clusters[a], clusters[b])].mean())
                if d < best:
                    best, pair = d, (a, b)
        if best >= below:
            break
        a, b = pair
        merges.append((a, b, best))
        clusters[a] = clusters[a] + clusters.pop(b)
    return merges


def average_linkage(dist: np.ndarray, threshold: float) -> np.ndarray:
    """Cluster labels of average-linkage agglomerative clustering on a distance matrix, merging
    while the closest pair of clusters is nearer than ``threshold`` (on average over members)."""
    n = len(dist)
    clusters = [[i] for i in range(n)]
    for a, b, _ in linkage_merges(dist, below=threshold):
        clusters[a] = clusters[a] + clusters.pop(b)
    labels = np.empty(n, dtype=int)
    for label, members in enumerate(clusters):
        labels[members] = label
    return labels


def dissimilar_by_rule(points: np.ndarray, task: int, *, rule: str, threshold: float) -> list[int]:
    """Earlier tasks (rows 0..task-1) called dissimilar to row ``task`` by a cosine rule.

    ``cut``: dissimilar when the cosine distance to the new task is at least ``threshold``.
    ``linkage``: dissimilar when outside the new task's average-linkage cluster.
    """
    dist = cosine_distances(points[: task + 1])
    if rule == "cut":
        return [i for i in range(task) if dist[task, i] >= threshold]
    if rule == "linkage":
        labels = average_linkage(dist, threshold)
        return [i for i in range(task) if labels[i] != labels[task]]
    raise ValueError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}")
