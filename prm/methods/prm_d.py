"""PRM(D), the paper's ablation: every earlier task treated as dissimilar (HAT after a DTD pass)."""

from prm.methods.base import Method
from prm.methods.prm import Relaxed


class AllDissimilar(Relaxed):
    source = "all-dissimilar"

    def dissimilar(self, task: int, called: list[int]) -> list[int]:
        return list(range(task))


METHOD = Method(
    name="prm-d", label="PRM(D)", colour="#8C510A", hooks=AllDissimilar, tuned=("lamb",), role="ablation",
    paper="PRM(D)", help="PRM(D) ablation: every previous task treated as dissimilar (HAT plus the DTD pass)",
)
