"""What makes a folder a run this version reads: the schema number, and the one error a
reader raises when a folder is not such a run.

Its own module, below every other part of the run format, so that ``prm.checkpoint`` (which
refuses a damaged checkpoint with the same error) and the writer that stores checkpoints can
both import it without a cycle.
"""

SCHEMA = 1
"""The layout of run folders written now; a reader opens schemas 1 to ``SCHEMA``."""


class RunFormatError(ValueError):
    """The folder is not a readable run (missing/corrupt run.json, newer schema, ...)."""
