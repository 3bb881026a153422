"""NCL: naive continual learning, one unmasked network fine-tuned on each task in turn with no
protection at all; the lower bound every continual method must beat (the base ``Hooks``)."""

from prm.methods.base import Hooks, Method

METHOD = Method(
    name="ncl", label="NCL", colour="#262626", hooks=Hooks, role="lower-bound", paper="NCL",
    help="naive continual learning: fine-tune the same unmasked network, no protection",
)
