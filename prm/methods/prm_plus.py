"""PRM+: this project's variant of PRM (not the paper's), with what the DTD study chose:
DTD by average linkage on the cosine distance of the binarised embeddings of both layers
together, cut at 0.3; similar tasks' units relaxed to 0.3 of their gradient; the new head
started from its nearest similar task's head. Same hooks as PRM: only its levers differ."""

from prm.methods.base import Method
from prm.methods.prm import Relaxed

METHOD = Method(
    name="prm+", label="PRM+", colour="#E66101", hooks=Relaxed, tuned=("lamb",),
    levers={"features": "binary", "clustering": "linkage", "threshold": 0.3, "layers": "together", "relax": 0.3,
            "head_init": "similar"},
    help="PRM+ (this project's variant, not the paper's): DTD by average linkage on the cosine distance of "
         "binarised embeddings (both layers, cut 0.3), similar tasks' units relaxed to 0.3 of their gradient, "
         "the new head copied from the nearest similar task (docs/dtd-study.md)",
)
