"""Synthetic writing styles: similar tasks whose similarity is known by construction.

These are *synthetic style shifts* of MNIST digits, not real writers (and not
F-EMNIST). Every style task is a 10-way digit task on its own disjoint chunk
of the pool, drawn in one style: a rotation, a slant (shear), a scale and a
stroke thickness. A style is its family's centre plus a small seeded
per-task offset, so tasks of one family are near-copies of the same function
and tasks of different families are related but shifted.

Two controls test that a method does not call everything similar:

* ``permuted``: a twin of one style task with the same images and style but a
  shuffled class mapping (a derangement: no digit keeps its head index). Same
  inputs, different function; a classifier reused as is fails on it.
* ``rotated-90``: a twin of one style task with its images rotated a further
  90 degrees: the same function under a shift far larger than any family's.

Transforms run in torch (``affine_grid``/``grid_sample`` for the geometry,
3x3 max-pooling for thickening and min-pooling for thinning).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from prm.datasets.core import Task, make_task
from prm.datasets.pool import SIDE, Pool, chunks


@dataclass(frozen=True)
class Style:
    rotate: float = 0.0  # degrees, counter-clockwise as displayed
    shear: float = 0.0  # horizontal slant per unit height; > 0 leans the tops to the right, like italics
    scale: float = 1.0
    thick: float = 0.0  # > 0 thickens (dilate), < 0 thins (erode); |thick| <= 1

    def label(self) -> str:
        return f"rot {self.rotate:+.0f}, shear {self.shear:+.2f}, scale {self.scale:.2f}, thick {self.thick:+.2f}"


FAMILIES: dict[str, Style] = {
    "style-A": Style(rotate=-25.0, shear=0.0, scale=1.0, thick=0.0),  # tilted right
    "style-B": Style(rotate=10.0, shear=0.35, scale=0.95, thick=0.6),  # slanted and bold
    "style-C": Style(rotate=0.0, shear=-0.25, scale=0.75, thick=-0.5),  # small and thin
}
OFFSET = Style(rotate=4.0, shear=0.05, scale=0.04, thick=0.15)  # per-task offset: uniform within +-these
CONTROLS = ("permuted", "rotated-90")


def jitter(centre: Style, rng: np.random.Generator) -> Style:
    """The family centre moved by a uniform random offset within :data:`OFFSET`."""
    d = rng.uniform(-1.0, 1.0, 4)
    return Style(
        rotate=centre.rotate + d[0] * OFFSET.rotate,
        shear=centre.shear + d[1] * OFFSET.shear,
        scale=centre.scale + d[2] * OFFSET.scale,
        thick=float(np.clip(centre.thick + d[3] * OFFSET.thick, -1.0, 1.0)),
    )


def render(x: np.ndarray, style: Style) -> np.ndarray:
    """Apply ``style`` to flattened 28x28 images in [0, 1]; returns float32 in [0, 1]."""
    img = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).view(-1, 1, SIDE, SIDE)
    r = -math.radians(style.rotate)  # image rows grow downwards, so a visual counter-clockwise turn is negative
    forward = style.scale * torch.tensor(
        [[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]], dtype=torch.float64
    ) @ torch.tensor([[1.0, -style.shear], [0.0, 1.0]], dtype=torch.float64)
    theta = torch.zeros(1, 2, 3, dtype=torch.float32)
    theta[0, :, :2] = torch.linalg.inv(forward).float()  # the grid maps output pixels back to input pixels
    grid = F.affine_grid(theta.expand(len(img), 2, 3), list(img.shape), align_corners=False)
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if style.thick > 0:
        out = out + style.thick * (F.max_pool2d(out, 3, stride=1, padding=1) - out)
    elif style.thick < 0:
        out = out + style.thick * (out + F.max_pool2d(-out, 3, stride=1, padding=1))
    return out.clamp_(0.0, 1.0).reshape(len(img), -1).numpy()


def _derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    while True:
        perm = rng.permutation(n)
        if not np.any(perm == np.arange(n)):
            return perm


def style_tasks(pool: Pool, *, k: int, seed: int) -> list[Task]:
    """``k`` style units: ``k - 2`` style tasks plus the two controls when ``k >= 3``, else ``k`` style tasks.

    Style task ``j`` uses chunk ``j`` of ``k - 2`` (or ``k``) disjoint pool
    chunks and family ``j mod 3``. The controls reuse the images (and split) of
    two different style tasks chosen by the seed.
    """
    n_style = k - len(CONTROLS) if k >= 3 else k
    rng = np.random.default_rng([seed, 12, k])
    names = list(FAMILIES)
    classes = tuple(range(int(pool.y.max()) + 1))
    tasks, styles, parts = [], [], chunks(pool, n_style, seed=seed)
    for j, rows in enumerate(parts):
        family = names[j % len(names)]
        style = jitter(FAMILIES[family], rng)
        tasks.append(_styled(pool, rows, style, name=f"{family} {j:02d}", family=family, classes=classes))
        styles.append(style)
    if k >= 3:
        base = rng.choice(n_style, size=2, replace=n_style < 2)
        b, perm = int(base[0]), _derangement(len(classes), rng)
        tasks.append(_styled(pool, parts[b], styles[b], name=f"permuted twin of {tasks[b].name}", family="permuted",
                             classes=tuple(int(c) for c in np.argsort(perm)), relabel=perm))
        b = int(base[1])
        tasks.append(_styled(pool, parts[b], replace(styles[b], rotate=styles[b].rotate + 90.0),
                             name=f"rotated-90 twin of {tasks[b].name}", family="rotated-90", classes=classes))
    return tasks


def _styled(pool, rows, style, *, name, family, classes, relabel=None) -> Task:
    """A task on ``rows`` (train, val, test) of the pool, drawn in ``style``; ``relabel`` maps digit -> head."""
    parts = []
    for idx in rows:
        y = pool.y[idx] if relabel is None else relabel[pool.y[idx]]
        parts.append((render(pool.x[idx], style), y))
    return make_task(name=name, family=family, classes=classes, parts=tuple(parts), rows=rows)
