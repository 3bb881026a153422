"""ACL's network and losses (Ebrahimi et al., ECCV 2020, "Adversarial Continual Learning").

Two encoders read every image: a shared module S, trained through every task, and a small
private module P_t per task, trained on task t only and frozen afterwards. Task t's head reads
the concatenation [S(x), P_t(x)]. While t is learnt, a discriminator D tries to tell from S(x)
which task an image belongs to; S is trained against it through a gradient reversal, so it is
pushed towards features that say nothing about the task (shared knowledge, which later tasks
may keep changing with little harm), while whatever is task-specific has to go to P_t, which
nobody changes again. A difference loss keeps S(x) and P_t(x) orthogonal, so the two do not
learn the same thing twice. The training schedule (several updates of the main network per
batch, then D's own updates) is the method module's (``prm.methods.acl``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prm.learner import Learner


class _Reverse(torch.autograd.Function):
    """The identity forward; backward multiplies the gradient by -1 (Ganin and Lempitsky's
    gradient reversal, scale 1 as in every configuration of the original)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return -grad


def reverse_gradient(x: Tensor) -> Tensor:
    """``x`` unchanged, but the gradient flowing back through it is negated: whatever lies
    before it descends what lies after it ascends. Minimising the discriminator's loss then
    trains D to recognise the task and, at the same time, trains S to hide it."""
    return _Reverse.apply(x)


def difference_loss(shared: Tensor, private: Tensor, eps: float = 1e-6) -> Tensor:
    """||S^T P||_F^2 over a batch, normalised as the original normalises it: each sample's
    shared and private vector scaled to unit length (the norm held constant for the gradient,
    ``eps`` added to it), then the mean of the squared entries of the (shared width x private
    width) matrix S^T P. Zero exactly when no shared unit is correlated over the batch with
    any private unit. Computed as sum((S S^T) * (P P^T)), the same sum
    sum_kl (sum_i s_ik p_il)^2 regrouped over pairs of samples: batch x batch products instead
    of a width x width one, several times cheaper when the batch is smaller than the widths."""
    s = shared / (shared.norm(dim=1, keepdim=True).detach() + eps)
    p = private / (private.norm(dim=1, keepdim=True).detach() + eps)
    return ((s @ s.t()) * (p @ p.t())).sum() / (s.shape[1] * p.shape[1])


class Discriminator(nn.Module):
    """D: S(x) -> scores of ``tasks + 1`` classes, class 0 the "fake" class of Gaussian noise
    and class k + 1 task k. The original's layers: a reversal, a linear layer, LeakyReLU, two
    linear layers with nothing between them."""

    def __init__(self, *, width: int, hidden: int, tasks: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(width, hidden), nn.LeakyReLU(), nn.Linear(hidden, hidden),
                                    nn.Linear(hidden, tasks + 1))

    def forward(self, z: Tensor) -> Tensor:
        return self.layers(reverse_gradient(z))


class SharedPrivate(Learner):
    """S (the set-up's MLP: input dropout, then per hidden layer linear -> ReLU -> dropout),
    one private module per task (linear -> ReLU on the raw input, no dropout, as the
    original's) and one linear head per task on [S(x), P_t(x)]. ``discriminator`` is the
    current task's D (``fresh_discriminator``); ``adv_weight`` and ``diff_weight`` weigh the
    adversarial and difference losses in the objective."""

    def __init__(self, *, input_dim: int, hidden: Sequence[int], private: int, head_sizes: Sequence[int],
                 input_dropout: float, hidden_dropout: float, adv_weight: float, diff_weight: float) -> None:
        super().__init__()
        sizes = [input_dim, *hidden]
        self.shared = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.privates = nn.ModuleList(nn.Linear(input_dim, private) for _ in head_sizes)
        self.heads = nn.ModuleList(nn.Linear(hidden[-1] + private, n) for n in head_sizes)
        self.input_dropout, self.hidden_dropout = nn.Dropout(input_dropout), nn.Dropout(hidden_dropout)
        self.adv_weight, self.diff_weight = adv_weight, diff_weight
        self.width = hidden[-1]  # S's output: what D reads
        self.discriminator: Discriminator | None = None

    def fresh_discriminator(self, task: int, hidden: int) -> None:
        """A new D for ``task`` (``task + 1`` real classes and the fake one): the original
        builds one per task, since its output layer grows with the tasks seen."""
        device = self.heads[0].weight.device
        self.discriminator = Discriminator(width=self.width, hidden=hidden, tasks=task + 1).to(device)

    def encode(self, x: Tensor, task: int) -> tuple[Tensor, Tensor]:
        """(S(x), P_task(x))."""
        h = self.input_dropout(x)
        for layer in self.shared:
            h = self.hidden_dropout(torch.relu(layer(h)))
        return h, torch.relu(self.privates[task](x))

    def read(self, shared: Tensor, private: Tensor, task: int) -> Tensor:
        """The head of ``task`` on the concatenated features."""
        return self.heads[task](torch.cat([shared, private], dim=1))

    def forward(self, x: Tensor, task: int, s: float) -> tuple[Tensor, None]:
        shared, private = self.encode(x, task)
        return self.read(shared, private, task), None

    def losses(self, x: Tensor, y: Tensor, task: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(task cross-entropy, D's cross-entropy on the real task label, difference loss, logits)."""
        shared, private = self.encode(x, task)
        logits = self.read(shared, private, task)
        real = torch.full((len(x),), task + 1, dtype=torch.long, device=x.device)
        adversarial = F.cross_entropy(self.discriminator(shared), real)
        return F.cross_entropy(logits, y), adversarial, difference_loss(shared, private), logits

    def total(self, data: Tensor, adversarial: Tensor, difference: Tensor) -> Tensor:
        return data + self.adv_weight * adversarial + self.diff_weight * difference

    def objective(self, x: Tensor, y: Tensor, task: int) -> tuple[Tensor, Tensor, Tensor]:
        """The original's loss for the main network: task loss + adv * D's loss + diff * the
        difference loss. D's loss reaches S through the reversal, so S ascends it."""
        data, adversarial, difference, logits = self.losses(x, y, task)
        return self.total(data, adversarial, difference), data, logits

    def validation_loss(self, x: Tensor, y: Tensor, task: int) -> float:
        """The same total, as the original's early stopping watches it."""
        data, adversarial, difference, _ = self.losses(x, y, task)
        return float(self.total(data, adversarial, difference))

    def trainable(self, task: int) -> list[nn.Parameter]:
        """S, and the private module and head of ``task``: the earlier tasks' stay as they
        were left (no gradient reaches them: the forward pass of ``task`` never reads them)."""
        return [*self.shared.parameters(), *self.privates[task].parameters(), *self.heads[task].parameters()]

    @torch.no_grad()
    def part_accuracies(self, x: Tensor, y: Tensor, task: int, chunk: int = 4096) -> tuple[float, float, float]:
        """Accuracy of ``task``'s head with both modules, with the private features zeroed
        (S alone) and with the shared ones zeroed (P_task alone), dropout off."""
        self.eval()
        correct = torch.zeros(3, dtype=torch.long)
        for start in range(0, len(x), chunk):
            shared, private = self.encode(x[start:start + chunk], task)
            yb = y[start:start + chunk]
            for k, (s, p) in enumerate(((shared, private), (shared, torch.zeros_like(private)),
                                        (torch.zeros_like(shared), private))):
                correct[k] += int((self.read(s, p, task).argmax(1) == yb).sum())
        return tuple(float(c) / len(x) for c in correct)
