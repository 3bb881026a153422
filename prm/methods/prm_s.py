"""PRM(S), the paper's ablation: every earlier task treated as similar, so LwPRM protects nothing."""

from prm.methods.base import Method
from prm.methods.prm import Relaxed


class AllSimilar(Relaxed):
    source = "all-similar"

    def dissimilar(self, task: int, called: list[int]) -> list[int]:
        return []


METHOD = Method(
    name="prm-s", label="PRM(S)", colour="#DE77AE", hooks=AllSimilar, tuned=("lamb",), role="ablation",
    paper="PRM(S)", help="PRM(S) ablation: every previous task treated as similar (nothing protected in LwPRM)",
)
