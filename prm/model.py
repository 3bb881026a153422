"""The HAT-masked MLP shared by every method.

input -> dropout -> [Linear -> ReLU -> dropout -> x mask] per hidden layer -> head of task t.
Layers and heads live in ModuleLists indexed by position. The task embeddings e_t^l of all
masked layers sit side by side in one table (row t = [e_t^1 | e_t^2 | ...]) and are split by
layer width: the maths is per layer exactly as in HAT, but sigmoid, gradient compensation
and clamping run as one operation per step instead of one per layer, which matters when a
step of this small network costs well under a millisecond. Unmasked methods (NCL, EWC, STL)
run the very same network with ``masked=False``: the masks are skipped, nothing else changes,
so every comparison is between methods, not architectures.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from prm.masks import task_mask


class MaskedMLP(nn.Module):
    def __init__(
        self,
        *,
        input_dim: int,
        hidden: Sequence[int],
        head_sizes: Sequence[int],
        input_dropout: float,
        hidden_dropout: float,
        masked: bool,
    ) -> None:
        super().__init__()
        self.masked = masked
        self.widths = tuple(hidden)
        sizes = [input_dim, *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        # HAT's init: one embedding per task and layer, N(0, 1); all layers in one row per task.
        self.embedding = nn.Embedding(len(head_sizes), sum(hidden))
        self.heads = nn.ModuleList(nn.Linear(hidden[-1], n) for n in head_sizes)
        self.input_dropout = nn.Dropout(input_dropout)
        self.hidden_dropout = nn.Dropout(hidden_dropout)

    def split(self, row: Tensor) -> list[Tensor]:
        """Cut a concatenated per-unit vector (or a batch of them) into one piece per layer."""
        return list(torch.split(row, self.widths, dim=-1))

    def task_embeddings(self, task: int) -> list[Tensor]:
        """e_t^l for every masked layer l (views into the table)."""
        return self.split(self.embedding.weight[task])

    def masks(self, task: int, s: float) -> list[Tensor]:
        """a_t^l = sigmoid(s e_t^l) for every masked layer l (with gradients)."""
        return self.split(task_mask(self.embedding.weight[task], s))

    def features(self, x: Tensor, task: int, s: float, *,
                 gates: Sequence[Tensor] | None = None) -> tuple[Tensor, Tensor | None]:
        """The feature extractor's output for ``task`` and the concatenated mask used
        (None when unmasked). ``gates`` (one per layer) replace the task's mask: CAT's
        attention reads the features under earlier tasks' frozen masks (``prm.cat``)."""
        if gates is not None:
            mask, per_layer = None, list(gates)
        else:
            mask = task_mask(self.embedding.weight[task], s) if self.masked else None
            per_layer = self.split(mask) if mask is not None else None
        h = self.input_dropout(x)
        for index, layer in enumerate(self.layers):
            h = self.hidden_dropout(torch.relu(layer(h)))
            if per_layer is not None:
                h = h * per_layer[index]
        return h, mask

    def forward(self, x: Tensor, task: int, s: float) -> tuple[Tensor, Tensor | None]:
        """Logits of task ``task``'s head, and the concatenated mask used (None when unmasked)."""
        h, mask = self.features(x, task, s)
        return self.heads[task](h), mask

    def shared_parameters(self) -> list[nn.Parameter]:
        """The feature extractor's weights and biases (not embeddings, not heads)."""
        return list(self.layers.parameters())
