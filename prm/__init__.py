"""PRM (Partially Relaxed Masks), HAT and their baselines: the engine the explorer reads.

``__version__`` is the engine's version, recorded in every run's ``run.json`` (``versions["prm"]``,
``prm.run.writing._versions``) so that a reader knows which engine's times it holds. Bump it (here and in
pyproject.toml, which a test keeps equal) whenever a change alters how fast the training step runs
or what it computes: from then on the seconds of older runs no longer compare with new ones, and
the explorer's Compare view times only runs of one version side by side.
"""

__version__ = "0.2.0"
