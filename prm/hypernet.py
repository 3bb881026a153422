"""A chunked hypernetwork that generates every weight of the task-incremental MLP, and the
output regulariser that keeps what it generates for earlier tasks in place (von Oswald et al.,
ICLR 2020, "Continual learning with hypernetworks").

The main network has no weights of its own: its two hidden layers and its output layer (the
heads of all tasks side by side, one block of rows per task, as in the original's multi-head
set-up) are one flat vector that the hypernetwork h computes from a task embedding e_t. A
hypernetwork as wide as that vector would be larger than the network it replaces, so the
vector is cut into equal chunks: the same small MLP is asked once per chunk, with the task
embedding and a learnt chunk embedding c_k as input, and the chunks' outputs are laid end to
end (the last chunk's surplus is dropped). Everything the hypernetwork shares between tasks
(its layers and the chunk embeddings) is Theta; each task owns only e_t.

Learning task t must not change h(e_j, Theta) for the earlier tasks j < t:

    R_t(Theta) = 1/t * sum_{j<t} || h(e_j, Theta) - h(e_j, Theta*) ||^2

with Theta* the hypernetwork before task t (the targets are computed once, when t starts) and
the earlier embeddings frozen. R_0 = 0: the first task has nothing to protect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def target_shapes(*, input_dim: int, hidden: Sequence[int], outputs: int) -> list[tuple[int, ...]]:
    """The main network's tensors in the order the flat vector holds them: per hidden layer its
    weight (out, in) and bias, then the output layer of all heads, (outputs, last width) and bias."""
    shapes, width = [], input_dim
    for h in (*hidden, outputs):
        shapes += [(h, width), (h,)]
        width = h
    return shapes


class ChunkedHypernet(nn.Module):
    """h(e, Theta): an MLP from [task embedding, chunk embedding] through ReLU hidden layers to
    ``chunk_size`` outputs, asked once per chunk. Initialised as the original's MNIST code
    initialises it: Xavier-uniform weights, zero biases, embeddings drawn from N(0, 1)."""

    def __init__(self, *, n_weights: int, n_tasks: int, embedding_dim: int, chunk_embedding_dim: int,
                 hidden: Sequence[int], chunk_size: int) -> None:
        super().__init__()
        self.n_weights, self.chunk_size = n_weights, chunk_size
        n_chunks = math.ceil(n_weights / chunk_size)
        self.task_embeddings = nn.ParameterList(nn.Parameter(torch.randn(embedding_dim)) for _ in range(n_tasks))
        self.chunk_embeddings = nn.Parameter(torch.randn(n_chunks, chunk_embedding_dim))
        widths = (embedding_dim + chunk_embedding_dim, *hidden, chunk_size)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        for layer in self.layers:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def theta(self) -> list[Tensor]:
        """The shared parameters the regulariser protects: chunk embeddings, then each layer's
        weight and bias (the order ``generate`` reads them in)."""
        return [self.chunk_embeddings, *(p for layer in self.layers for p in (layer.weight, layer.bias))]

    def generate(self, embeddings: Tensor, theta: Sequence[Tensor] | None = None) -> Tensor:
        """The flat main-network weights for each row of ``embeddings`` (k, embedding_dim):
        (k, n_weights). ``theta``: the shared parameters to use instead of the module's own
        (the regulariser's look-ahead evaluates h at Theta + dTheta)."""
        chunks, *params = self.theta() if theta is None else theta
        k, n = len(embeddings), len(chunks)
        h = torch.cat([embeddings.unsqueeze(1).expand(k, n, -1), chunks.unsqueeze(0).expand(k, n, -1)], dim=2)
        last = len(params) // 2 - 1
        for i in range(last + 1):
            h = F.linear(h, params[2 * i], params[2 * i + 1])
            if i < last:
                h = F.relu(h)
        return h.reshape(k, n * self.chunk_size)[:, : self.n_weights]


def unflatten(flat: Tensor, shapes: Sequence[tuple[int, ...]]) -> list[Tensor]:
    """One generated vector as the main network's tensors (views, so gradients reach h)."""
    out, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        out.append(flat[start:start + size].view(shape))
        start += size
    return out


def main_forward(x: Tensor, weights: Sequence[Tensor], head: slice, *, input_dropout: float, hidden_dropout: float,
                 training: bool) -> Tensor:
    """The task-incremental MLP with generated weights: input dropout, then per hidden layer
    linear, ReLU and dropout, then only ``head``'s rows of the output layer (the task's head)."""
    h = F.dropout(x, input_dropout, training)
    for i in range(len(weights) // 2 - 1):
        h = F.dropout(F.relu(F.linear(h, weights[2 * i], weights[2 * i + 1])), hidden_dropout, training)
    return F.linear(h, weights[-2][head], weights[-1][head])


def output_regulariser(hnet: ChunkedHypernet, embeddings: Tensor, targets: Tensor,
                       theta: Sequence[Tensor] | None = None) -> Tensor:
    """1/t * sum_j || h(e_j, theta) - target_j ||^2 over the t rows of ``embeddings`` and
    ``targets`` (the earlier tasks' frozen embeddings and the weights h gave them before the
    current task); 0 when there is no earlier task. The embeddings are detached: only Theta
    answers for keeping them."""
    if len(embeddings) == 0:
        return targets.new_zeros(())
    generated = hnet.generate(embeddings.detach(), theta)
    return F.mse_loss(generated, targets, reduction="sum") / len(embeddings)
