"""Every session-state and query-parameter key the app uses, in one place.

The run, the view (tab), the task, the layer, the projection and the distance measure are kept
in the URL, so a view can be shared as a link and survives a reload: ``?run=sample_runs/
digits-mixed-prm-s0&view=Clustering&task=T7&layer=1&measure=cosine``. A URL value that is not
valid for the run is reported above the views and replaced by the default.
"""

from __future__ import annotations

import os
from pathlib import Path

from prm.datasets.core import expand_home

RUN = "run"  # query parameter and widget key: the chosen run (its catalogue key)
OPEN_RUN = "open_run"  # a run another part of the page asked to open; the sidebar applies it on the next full run
OPEN_RUNS_DIR = "open_runs_dir"  # the folder that run lives in, where the picker does not look (a trial's study folder)
VIEW = "view"  # query parameter and tabs key: the open view's label
TASK = "task"  # query parameter and widget key: the chosen task, as "T1".."TN"
LAYER = "layer"  # query parameter and widget key: the masked layer, as "0", "1", ...
MEASURE = "measure"  # query parameter and widget key: the Clustering view's distance measure
URL_PROBLEMS = "url_problems"  # messages about URL values that were not valid, shown once above the views
RUNS_DIR = "runs_dir"
UPLOAD = "upload"
UPLOADED = "uploaded_ids"  # file ids already unpacked, so a rerun does not unpack again
UPLOAD_MESSAGE = "upload_message"  # (kind, text) the upload callback leaves for the sidebar
LIVE_STARTED = "live_started"  # run folders this browser session started
PROJECTION = "projection"  # query parameter and widget key: umap, pca or tsne
PROJECTION_CHOSEN = "projection_chosen"  # the user's projection, kept while trajectories force PCA
STEP = "step"
TRAJECTORIES = "trajectories"
COMPARE_RUNS = "cmp-runs"
COMPARE_FOR = "cmp-for"  # the run Compare's selection was made for: another run resets it
COMPARE_UNFINISHED = "cmp-unfinished"  # include unfinished runs in Compare
TUNING_STORAGE = "tune-storage"  # widget: a known storage, or OTHER_STORAGE
TUNING_URL = "tune-url"  # widget: the URL typed when OTHER_STORAGE is chosen
TUNING_STUDY = "tune-study"  # widget: the study shown
TUNING_CHOSEN = "tune-chosen"  # (url, study) last shown in Tuning: kept while other tabs are open (widget state
# is dropped when its widget is not drawn), and where Compare also looks for PS
TUNING_OPEN_TRIAL = "tune-open-trial"  # widget: the trial whose run folder the Open button shows
OTHER_STORAGE = "another URL"
MODE = "mode"  # query parameter: "lecture" for lecture mode (the Story one step per screen)
LECTURE_MODE = "lecture"  # MODE's one value
LECTURE = "lecture-toggle"  # widget: the sidebar's lecture-mode toggle
SLIDE = "slide"  # query parameter and session key: the lecture's step, "1".."5"
LIVE_SEQUENCE, LIVE_METHOD, LIVE_SEED = "live-sequence", "live-method", "live-seed"  # Train-live form
# widgets: other views (Story's "train the missing runs") fill them in before switching there

STORY, OVERVIEW, ACCURACY, EMBEDDINGS, CLUSTERING, MASKS, LIVE, COMPARE, TUNING = (
    "Story", "Overview", "Accuracy matrix", "Task embeddings", "Clustering", "Masks", "Train live", "Compare", "Tuning")
VIEWS = (STORY, OVERVIEW, ACCURACY, EMBEDDINGS, CLUSTERING, MASKS, LIVE, COMPARE, TUNING)
MEASURES = ("euclidean", "cosine")
PROJECTIONS = ("umap", "pca", "tsne")

DEFAULT_RUNS_DIR = os.environ.get("PRM_EXPLORER_RUNS", "runs")
"""The user's runs folder (relative to the repository root unless absolute)."""


def runs_root(value: str, root: Path) -> Path:
    """The runs folder typed (empty: the default), ``~`` expanded, relative to ``root``.

    Raises ValueError, worded for the sidebar, when a ``~user`` in it names no home folder
    (``Path.expanduser`` would raise a bare RuntimeError): the caller shows it and writes nothing.
    """
    try:
        path = expand_home(value or DEFAULT_RUNS_DIR)
    except ValueError as exc:
        raise ValueError(f"runs folder {exc}") from None
    return path if path.is_absolute() else root / path
