"""PRM(T), the paper's ablation: the true similarity replaces the clustering. Two tasks are truly
similar when they share a family and a label set (``prm.analysis.true_groups``), which the
engine hands to every method as ``groups``."""

from prm.methods.base import Method
from prm.methods.prm import Relaxed


class TrueSimilarity(Relaxed):
    source = "true"

    def dissimilar(self, task: int, called: list[int]) -> list[int]:
        return [i for i in range(task) if self.groups[i] != self.groups[task]]


METHOD = Method(
    name="prm-t", label="PRM(T)", colour="#B2ABD2", hooks=TrueSimilarity, tuned=("lamb",), role="ablation",
    paper="PRM(T)",
    help="PRM(T) ablation: the true similarity (same family and label set) replaces the clustering",
)
