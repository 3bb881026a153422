"""Joint training (not continual): after each task t, a fresh unmasked network trained on the
data of tasks 1..t at once, one head per task; the upper bound of what sharing can give."""

from __future__ import annotations

from torch import Tensor

from prm.methods.base import Method
from prm.methods.stl import Fresh
from prm.model import MaskedMLP


class Together(Fresh):
    """STL's fresh network per task, trained on every task so far; it answers for all of them."""

    def also(self, task: int) -> list[tuple[int, dict[str, Tensor]]]:
        return [(i, self.data[i]) for i in range(task)]

    def evaluated(self, task: int, model: MaskedMLP) -> MaskedMLP:
        return model


METHOD = Method(
    name="joint", label="joint", colour="#999999", hooks=Together, role="upper-bound",
    help="joint training (not continual): after each task t, a fresh unmasked network trained on the data "
         "of tasks 1..t at once, one head per task (the upper bound of transfer)",
)
