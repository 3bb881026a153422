"""2-D projections of task embeddings (PCA, UMAP, t-SNE) for plots.

Runs store these precomputed at their end, so opening a run never waits for UMAP's numba
compile; that compile is kept on disk (:mod:`prm.caches`), so only a machine's first process
pays it. All points of one layer (every task's final embedding plus the DTD embedding of
each new task) are projected together, so one picture holds every step of the sequence.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.decomposition import PCA

METHODS = ("pca", "umap", "tsne")


def _pad(coords: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((n, 2))
    out[:, : coords.shape[1]] = coords
    return out


def project(points: np.ndarray, *, method: str, seed: int = 0) -> tuple[np.ndarray, str]:
    """Return (n, 2) coordinates and the method actually used.

    UMAP and t-SNE need a neighbourhood: with fewer than 4 points they fall back to PCA
    (and say so in the second value), since a 'manifold' of 2 or 3 points means nothing.
    """
    points = np.asarray(points, dtype=np.float64)
    n = len(points)
    if method not in METHODS:
        raise ValueError(f"unknown projection {method!r}; choose one of {', '.join(METHODS)}")
    if n == 0:
        return np.zeros((0, 2)), method
    if n == 1 or np.allclose(points, points[0]):
        return np.zeros((n, 2)), "pca"
    if method == "pca" or n < 4:
        components = min(2, n - 1, points.shape[1])
        return _pad(PCA(n_components=components, random_state=seed).fit_transform(points), n), "pca"
    if method == "umap":
        import torch
        import umap  # imported lazily: numba compilation costs seconds on first use

        from prm.caches import cache_umap_compiles

        cache_umap_compiles()  # so that only the first process on this machine compiles
        reducer = umap.UMAP(n_neighbors=min(15, n - 1), n_components=2, random_state=seed,
                            init="random" if n < 10 else "spectral", n_jobs=1)
        # numba's first parallel launch resets torch's intra-op thread count to the core count:
        # a process that trains after a UMAP fit (sample-run script, tests, the app) would then
        # oversubscribe the cores and train up to 10x slower. Put the setting back.
        threads = torch.get_num_threads()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return reducer.fit_transform(points), "umap"
        finally:
            torch.set_num_threads(threads)
    from sklearn.manifold import TSNE

    return TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), random_state=seed,
                init="pca").fit_transform(points), "tsne"
