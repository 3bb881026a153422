"""The run folder: one writer appends what the engine emits; one loader reads any run back.

- :mod:`prm.run.errors`: the schema number and ``RunFormatError``;
- :mod:`prm.run.state`: the fold of event records into a typed ``RunState`` (pure);
- :mod:`prm.run.meta`: ``run.json`` (config, writer, what-if parent);
- :mod:`prm.run.summary`: ``summary.json``, the run picker's cache;
- :mod:`prm.run.reading`: ``load_run`` (the folder layout and what is tolerated);
- :mod:`prm.run.writing`: ``RunWriter`` and the finishing steps (summary, projections).

The run format knows nothing of methods beyond ``prm.records.method_flags``.
"""

from prm.run.errors import SCHEMA, RunFormatError
from prm.run.meta import UPLOADED, RunParent, read_meta, writer_alive
from prm.run.reading import Run, iter_records, list_runs, load_run, parse_lines
from prm.run.state import RunState, apply_events
from prm.run.summary import read_summary, trusted_summary
from prm.run.writing import (RunWriter, embedding_points, finalize_run, summarise, write_projections,
                             write_summary)

__all__ = ["SCHEMA", "UPLOADED", "Run", "RunFormatError", "RunParent", "RunState", "RunWriter",
           "apply_events", "embedding_points", "finalize_run", "iter_records", "list_runs", "load_run", "parse_lines",
           "read_meta", "read_summary", "summarise", "trusted_summary", "write_projections", "write_summary",
           "writer_alive"]
