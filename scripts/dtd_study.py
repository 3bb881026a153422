"""Does DTD see the task families? Scores ways of turning DTD's embeddings into a dissimilar set.

Why: PRM's dissimilar-task detection (DTD) clusters the task embeddings with X-means, and on
the bundled sequences it often calls the wrong earlier tasks dissimilar. This script asks
whether the families are visible in the embeddings at all, and in which representation and
with which clustering rule. It reads recorded runs only (every PRM-family run records, for
each new task t, the embedding table of tasks 0..t that DTD ended with), so the comparison
costs no training. ``docs/dtd-study.md`` says what is measured and why.

    # offline, on recorded runs (seconds):
    python scripts/dtd_study.py analyse sample_runs/digits-mixed-prm-s0 sample_runs/mnist5k-mixed-prm-s0 --markdown
    # train PRM-family runs with config overrides, then analyse them:
    python scripts/dtd_study.py train --sequence digits-mixed --seeds 100,101,102 --method prm-d \\
        --set prm.embedding_init=zeros --set prm.dtd_epochs=80 --out study/zeros --jobs 2

Scores, per (representation, clustering): the share of earlier tasks called right (as
``prm.analysis.calls_right`` against ``true_groups``), over every (DTD step, earlier task)
pair, mean +- std over runs of a sequence; the adjusted Rand index (ARI) of the clustering of
tasks 0..t against the true groups, for rules that cluster every task; and the difference
of the share to the all-dissimilar baseline (HAT's choice).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prm import methods  # noqa: E402
from prm.analysis import calls_right, true_groups  # noqa: E402
from prm.similarity import average_linkage, cosine_distances, dissimilar_by_rule, features  # noqa: E402
from prm.xmeans import default_var_floor, dtd_call, xmeans  # noqa: E402
from prm.xmeans import undecided as xmeans_undecided  # noqa: E402

REPRESENTATIONS = ("raw", "binary", "mask", "standardised", "unit", "delta")
THRESHOLDS = (0.2, 0.3, 0.4, 0.5)
BASELINES = ("all-dissimilar", "all-similar")
CLUSTERINGS = ("xmeans", "xmeans-pc", "kmeans-sil",
               *(f"{rule}@{th}" for rule in ("linkage-cos", "linkage-jac", "cut-cos") for th in THRESHOLDS),
               "nearest", *BASELINES)
"""Every rule; ``name@th`` is a rule cut at cosine (or Jaccard) distance ``th``."""
KMEANS_INIT = 4
"""k-means restarts for ``kmeans-sil`` and the local 2-means of ``xmeans-pc`` (sklearn's fixed
cost per call dominates on a few points; 4 restarts keep the study at seconds per run)."""


# ----------------------------------------------------------------------------- representations


def represent(table: np.ndarray, kind: str, *, smax: float, delta: np.ndarray | None = None) -> np.ndarray:
    """Rows 0..t of DTD's embedding table as ``kind`` (see ``REPRESENTATIONS``).

    ``mask`` is sigmoid(smax e), the mask at s = smax. ``delta`` replaces the new task's row
    (the last) by ``delta``, its change during DTD; earlier tasks keep their raw rows.
    """
    table = np.asarray(table, dtype=np.float64)
    if kind == "mask":
        return 1.0 / (1.0 + np.exp(-np.clip(smax * table, -50.0, 50.0)))
    if kind == "delta":
        if delta is None:
            raise ValueError("the delta representation needs the DTD trajectory")
        out = table.copy()
        out[-1] = delta
        return out
    return features(table, kind)  # raw, binary, standardised, unit (ValueError for others)


def active(points: np.ndarray, kind: str) -> np.ndarray:
    """Which units count as 'on' for the Jaccard rule: value > 0 (mask: > 0.5, i.e. e > 0)."""
    return points > (0.5 if kind == "mask" else 0.0)


def jaccard_distances(on: np.ndarray) -> np.ndarray:
    """1 - |A and B| / |A or B| between the rows' sets of active units; two empty sets: 0."""
    on = np.asarray(on, dtype=np.float64)
    both = on @ on.T
    sizes = on.sum(axis=1)
    union = sizes[:, None] + sizes[None, :] - both
    return np.where(union > 0, 1.0 - both / np.where(union > 0, union, 1.0), 0.0)


# ----------------------------------------------------------------------------- clusterings


def _kmeans(points: np.ndarray, k: int, *, seed: int, init="k-means++") -> np.ndarray:
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    n_init = KMEANS_INIT if isinstance(init, str) else 1
    with warnings.catch_warnings():  # duplicate points: fewer distinct clusters than k
        warnings.simplefilter("ignore", ConvergenceWarning)
        return KMeans(n_clusters=k, init=init, n_init=n_init, random_state=seed).fit_predict(points)


def bic_per_cluster(points: np.ndarray, labels: np.ndarray, *, var_floor: float) -> float:
    """Pelleg & Moore's BIC as pyclustering computes it: sigma2 = SSE / (R - k) (all dims
    pooled), l_n = R_n log(R_n / R) - R_n/2 log(2 pi) - R_n M/2 log(sigma2) - (R_n - k)/2,
    and the penalty p/2 log R, p = (k - 1) + M k + 1, subtracted once *per cluster*.
    ``var_floor`` keeps it finite for duplicate points (pyclustering gives -inf there)."""
    R, M = points.shape
    ids = np.unique(labels)
    k = len(ids)
    sse = sum(float(((points[labels == c] - points[labels == c].mean(0)) ** 2).sum()) for c in ids)
    sigma2 = max(sse / (R - k), var_floor) if R > k else var_floor
    p = (k - 1) + M * k + 1
    total = 0.0
    for c in ids:
        n = float((labels == c).sum())
        total += (n * math.log(n / R) - n / 2 * math.log(2 * math.pi) - n * M / 2 * math.log(sigma2)
                  - (n - k) / 2 - p / 2 * math.log(R))
    return total


def xmeans_pc(points: np.ndarray, *, seed: int) -> np.ndarray | None:
    """X-means with pyclustering's BIC (:func:`bic_per_cluster`) and its local split test: a
    cluster of 3 or more points is split by 2-means when the BIC of its two children, on its
    own points, beats its BIC as one cluster; after a round with a kept split every point is
    re-assigned by k-means from the current centres. Returns labels, or None when no split
    could be tried (fewer than 3 points: the project's "undecided")."""
    labels = np.zeros(len(points), dtype=int)
    if len(points) < 3:
        return None
    floor = default_var_floor(points)
    done: set[tuple[int, ...]] = set()
    while True:
        kept, centres = False, []
        for c in np.unique(labels):
            members = np.flatnonzero(labels == c)
            sub = points[members]
            if len(members) < 3 or tuple(members) in done or len(np.unique(sub, axis=0)) < 2:
                centres.append(sub.mean(0))
                continue
            halves = _kmeans(sub, 2, seed=seed)
            if bic_per_cluster(sub, halves, var_floor=floor) > bic_per_cluster(sub, np.zeros_like(halves),
                                                                               var_floor=floor):
                centres += [sub[halves == 0].mean(0), sub[halves == 1].mean(0)]
                kept = True
            else:
                done.add(tuple(members))
                centres.append(sub.mean(0))
        if not kept:
            return labels
        labels = _relabel(_kmeans(points, len(centres), seed=seed, init=np.array(centres)))
        if len(centres) >= len(points):
            return labels


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Labels numbered by first appearance (empty clusters vanish)."""
    order = {int(v): i for i, v in enumerate(dict.fromkeys(labels.tolist()))}
    return np.array([order[int(v)] for v in labels])


def kmeans_silhouette(points: np.ndarray, *, seed: int) -> np.ndarray:
    """k-means with k in 2..n-1 chosen by the best silhouette; one cluster when n < 3 (or
    when no k gives 2..n-1 distinct clusters: duplicate points)."""
    from sklearn.metrics import silhouette_score

    n = len(points)
    best, labels = -np.inf, np.zeros(n, dtype=int)
    for k in range(2, n):
        found = _kmeans(points, k, seed=seed)
        if 2 <= len(np.unique(found)) <= n - 1:
            score = silhouette_score(points, found)
            if score > best:
                best, labels = score, found
    return labels


def cluster(points: np.ndarray, rule: str, *, seed: int, kind: str = "raw",
            undecided: str = "dissimilar") -> tuple[list[int], np.ndarray | None]:
    """The earlier tasks (rows 0..t-1) ``rule`` calls dissimilar to the last row t, and the
    labels of rows 0..t where the rule clusters every task (None for cut, nearest and the
    baselines). ``kind`` is the representation (for the Jaccard rule's 'on' units);
    ``undecided`` is ``PRMConfig.undecided``, used when X-means could try no split."""
    t = len(points) - 1
    name, _, th = rule.partition("@")
    if name == "all-dissimilar":
        return list(range(t)), None
    if name == "all-similar":
        return [], None
    if name == "nearest":
        return [i for i in range(t) if i != int(np.argmin(cosine_distances(points)[t, :t]))], None
    if name == "cut-cos":
        return dissimilar_by_rule(points, t, rule="cut", threshold=float(th)), None
    if name == "xmeans":  # as prm.dtd.Rule calls it
        result = xmeans(points, seed=seed)
        if undecided != "dissimilar" or not xmeans_undecided(result):
            return dtd_call(result, t, when_undecided=undecided), np.asarray(result.labels)
        labels = np.arange(t + 1)  # no split could be tested (2 tasks): every task its own cluster
    elif name == "xmeans-pc":
        labels = xmeans_pc(points, seed=seed)
        if labels is None:
            labels = np.arange(t + 1) if undecided == "dissimilar" else np.zeros(t + 1, dtype=int)
    elif name == "kmeans-sil":
        labels = kmeans_silhouette(points, seed=seed)
    elif name == "linkage-cos":
        labels = average_linkage(cosine_distances(points), float(th))
    elif name == "linkage-jac":
        labels = average_linkage(jaccard_distances(active(points, kind)), float(th))
    else:
        raise ValueError(f"unknown clustering {rule!r}; choose one of {', '.join(CLUSTERINGS)}")
    return [i for i in range(t) if labels[i] != labels[t]], np.asarray(labels)


# ----------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class Step:
    """One DTD step of one run: the new task ``task``, the embedding table of tasks 0..task
    (layers side by side when several are studied together), and the new task's change
    during DTD (same columns; None when the trajectory was not recorded)."""

    task: int
    table: np.ndarray
    delta: np.ndarray | None = None


def score_run(steps: Sequence[Step], groups: list[int], *, smax: float, seed: int,
              representations: Sequence[str] = REPRESENTATIONS, clusterings: Sequence[str] = CLUSTERINGS,
              undecided: str = "dissimilar") -> dict[tuple[str, str], tuple[float, float | None]]:
    """(representation, clustering) -> (share of earlier tasks called right, ARI) of one run.

    Both are averaged over the steps weighted by t (every (step, earlier task) pair counts
    once). ARI is None for rules without a full clustering. A representation that a step
    cannot provide (delta without a trajectory) is left out of the result.
    """
    out: dict[tuple[str, str], tuple[float, float | None]] = {}
    for kind in representations:
        if kind == "delta" and any(s.delta is None for s in steps):
            continue
        points = [represent(s.table, kind, smax=smax, delta=s.delta) for s in steps]
        for rule in clusterings:
            if rule in BASELINES and ("-", rule) in out:
                continue  # a baseline does not look at the points: one row is enough
            right, ari, weight, full = 0.0, 0.0, 0, True
            for step, p in zip(steps, points):
                dissimilar, labels = cluster(p, rule, seed=seed, kind=kind, undecided=undecided)
                right += step.task * calls_right(groups=groups, task=step.task, dissimilar=dissimilar)
                if labels is None:
                    full = False
                else:
                    ari += step.task * adjusted_rand_score(groups[: step.task + 1], labels)
                weight += step.task
            if weight:
                out[("-" if rule in BASELINES else kind, rule)] = (right / weight, ari / weight if full else None)
    return out


def aggregate(scores: Sequence[tuple[str, dict]]) -> tuple[list[str], dict]:
    """Pool per-run scores by sequence: returns the sequences in first-seen order and
    {(representation, clustering): {sequence: (mean right, std right, mean ARI or None, runs)}}."""
    sequences = list(dict.fromkeys(seq for seq, _ in scores))
    table: dict[tuple[str, str], dict[str, tuple]] = {}
    keys = list(dict.fromkeys(k for _, run in scores for k in run))
    for key in sorted(keys, key=lambda k: k[1] in BASELINES):  # baselines last, otherwise as scored
        for seq in sequences:
            values = [run[key] for s, run in scores if s == seq and key in run]
            if not values:
                continue
            right = [v[0] for v in values]
            aris = [v[1] for v in values if v[1] is not None]
            table.setdefault(key, {})[seq] = (float(np.mean(right)), float(np.std(right)),
                                              float(np.mean(aris)) if aris else None, len(values))
    return sequences, table


def _r(x: float) -> float:
    """Rounded to 3 digits, without the sign of a rounded-away negative (no -0.000)."""
    return round(x, 3) + 0.0


def format_table(sequences: list[str], table: dict, *, markdown: bool, layer: str | None = None) -> str:
    """One row per (representation, clustering); per sequence: calls right (mean +- std over
    runs), ARI, and the difference of calls right to the all-dissimilar baseline."""
    base = table.get(("-", "all-dissimilar"), {})
    head = (["layer"] if layer is not None else []) + ["representation", "clustering"]
    for seq in sequences:
        n = max((cells[seq][3] for cells in table.values() if seq in cells), default=0)
        head += [f"{seq} right (n={n})", f"{seq} ARI", f"{seq} vs all-dissimilar"]
    body = []
    for (kind, rule), cells in table.items():
        row = ([layer] if layer is not None else []) + [kind, rule]
        for seq in sequences:
            if seq not in cells:
                row += ["", "", ""]
                continue
            mean, std, ari, _ = cells[seq]
            row += [f"{mean:.3f} ± {std:.3f}", "-" if ari is None else f"{_r(ari):.3f}",
                    f"{_r(mean - base[seq][0]):+.3f}" if seq in base else "-"]
        body.append(row)
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *body])


# ----------------------------------------------------------------------------- reading runs


def layer_sets(n_layers: int, which: str) -> list[tuple[str, tuple[int, ...]]]:
    """(label, layers) studied for ``--layers``: each layer, all together, or both."""
    each = [(str(l), (l,)) for l in range(n_layers)]
    together = [("+".join(str(l) for l in range(n_layers)), tuple(range(n_layers)))] if n_layers > 1 else []
    return {"each": each, "together": together or each, "both": each + together}[which]


def run_steps(run, layers: Sequence[int]) -> list[Step]:
    """The run's DTD steps for ``layers`` (side by side); the delta is the last snapshot of the
    new task's DTD trajectory minus the first (None if any layer lacks two snapshots)."""
    steps = []
    for t in run.dtd_steps():
        table = np.hstack([run.dtd_embeddings(t, l) for l in layers]).astype(np.float64)
        trajectories = [run.trajectory(t, l, dtd=True) for l in layers]
        delta = None
        if all(tr is not None and tr.ndim == 2 and len(tr) >= 2 for tr in trajectories):
            delta = np.hstack([tr[-1].astype(np.float64) - tr[0].astype(np.float64) for tr in trajectories])
        steps.append(Step(task=t, table=table, delta=delta))
    return steps


def _analyse_one(job: tuple[str, str, tuple[str, ...], tuple[str, ...]]) -> tuple[str, dict]:
    """Load one run folder and score it for every layer set: (sequence, {label: scores})."""
    from prm.run import load_run

    folder, which, representations, clusterings = job
    run = load_run(folder)
    cfg = run.config
    groups = true_groups(run.state.tasks)
    scores = {label: score_run(run_steps(run, layers), groups, smax=cfg.hat.smax, seed=cfg.seed,
                               representations=representations, clusterings=clusterings,
                               undecided=cfg.prm.undecided)
              for label, layers in layer_sets(run.n_layers, which)}
    return run.state.sequence, scores


def analyse(folders: Sequence[str], *, layers: str = "both", markdown: bool = False, jobs: int = 1,
            representations: Sequence[str] = REPRESENTATIONS, clusterings: Sequence[str] = CLUSTERINGS,
            log: Callable[[str], None] = lambda s: None) -> str:
    """Score every run folder and return the table(s), one per layer set."""
    work = [(str(f), layers, tuple(representations), tuple(clusterings)) for f in folders]
    if jobs > 1 and len(work) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(_analyse_one, work))
    else:
        results = [_analyse_one(job) for job in work]
    for (folder, *_), (seq, by_layer) in zip(work, results):
        if not any(by_layer.values()):
            log(f"{folder}: no DTD steps recorded (not a PRM-family run, or fewer than 2 tasks); left out")
        elif "delta" in representations and not any(k[0] == "delta" for s in by_layer.values() for k in s):
            log(f"{folder}: no DTD trajectory with two snapshots; the delta representation is left out")
    labels = list(dict.fromkeys(label for _, by_layer in results for label in by_layer))
    parts = []
    for label in labels:
        sequences, table = aggregate([(seq, by_layer[label]) for seq, by_layer in results
                                      if by_layer.get(label)])
        if table:
            parts.append(format_table(sequences, table, markdown=markdown, layer=label))
    return "\n\n".join(parts)


# ----------------------------------------------------------------------------- training


def parse_value(text: str):
    """A ``--set`` value: JSON when it parses (numbers, true, null, lists), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def apply_overrides(config: dict, pairs: Sequence[str]) -> dict:
    """``section.field=value`` pairs applied to a ``RunConfig.to_dict()`` (copied); an unknown
    name is refused here, a bad value by ``RunConfig.from_dict``."""
    config = json.loads(json.dumps(config))
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep:
            raise ValueError(f"--set {pair!r}: expected section.field=value")
        *path, leaf = name.strip().split(".")
        node = config
        for part in path:
            if not isinstance(node.get(part), dict):
                raise ValueError(f"--set {pair!r}: no config section {part!r}")
            node = node[part]
        if leaf not in node:
            raise ValueError(f"--set {pair!r}: no config field {name!r}")
        node[leaf] = parse_value(text)
    return config


def _train_one(job: tuple[dict, str]) -> str:
    """Train and record one run (in a worker process when --jobs > 1)."""
    import torch

    from prm.config import RunConfig
    from prm.engine import train_sequence
    from prm.run import RunWriter

    torch.set_num_threads(1)
    data, folder = job
    cfg = RunConfig.from_dict(data)
    train_sequence(cfg, emit=RunWriter(folder, config=cfg))
    return folder


def train(args: argparse.Namespace) -> list[str]:
    from prm.config import RunConfig

    jobs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        base = RunConfig(sequence=args.sequence, method=args.method, seed=seed, n_tasks=args.n_tasks).to_dict()
        base["record"]["projections"] = ["pca"]  # UMAP is not needed here; --set may bring it back
        data = RunConfig.from_dict(apply_overrides(base, args.set)).to_dict()
        folder = Path(args.out) / f"{args.sequence}-{args.method}-s{seed}"
        if folder.exists() and any(folder.iterdir()):
            raise SystemExit(f"{folder} exists already: analyse it, or choose another --out")
        jobs.append((data, str(folder)))
    if args.jobs > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            return list(pool.map(_train_one, jobs))
    return [_train_one(job) for job in jobs]


# ----------------------------------------------------------------------------- main


def _names(text: str, allowed: Sequence[str], what: str) -> tuple[str, ...]:
    chosen = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in chosen if n not in allowed]
    if unknown or not chosen:
        raise SystemExit(f"--{what}: unknown {unknown}; choose from {', '.join(allowed)}")
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--layers", choices=("each", "together", "both"), default="both",
                        help="score each masked layer, all layers side by side, or both [%(default)s]")
    common.add_argument("--markdown", action="store_true", help="print Markdown tables")
    common.add_argument("--jobs", type=int, default=1, help="worker processes [%(default)s]")
    common.add_argument("--representations", default=",".join(REPRESENTATIONS), help="[%(default)s]")
    common.add_argument("--clusterings", default=",".join(CLUSTERINGS), help="[all]")
    a = sub.add_parser("analyse", parents=[common], help="score recorded run folders")
    a.add_argument("folders", nargs="+")
    t = sub.add_parser("train", parents=[common], help="train PRM-family runs, then score them")
    t.add_argument("--sequence", default="digits-mixed")
    t.add_argument("--seeds", default="100,101,102")
    t.add_argument("--method", default="prm-d", help="a PRM-family method (they all run DTD) [%(default)s]")
    t.add_argument("--n-tasks", type=int, default=None, help="first N tasks of the sequence [all]")
    t.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="config override, e.g. prm.embedding_init=zeros, model.hidden=[64,64] (repeatable)")
    t.add_argument("--out", default="runs/dtd-study", help="folder for the new run folders [%(default)s]")
    args = parser.parse_args(argv)
    representations = _names(args.representations, REPRESENTATIONS, "representations")
    clusterings = _names(args.clusterings, CLUSTERINGS, "clusterings")
    if args.mode == "train":
        if args.method not in methods.with_dtd():
            raise SystemExit(f"--method {args.method}: only the PRM family runs DTD")
        try:
            folders = train(args)
        except ValueError as exc:  # ConfigError is one
            raise SystemExit(str(exc)) from None
    else:
        folders = args.folders
    from prm.run import RunFormatError

    try:
        print(analyse(folders, layers=args.layers, markdown=args.markdown, jobs=args.jobs,
                      representations=representations, clusterings=clusterings,
                      log=lambda s: print(s, file=sys.stderr)))
    except RunFormatError as exc:
        raise SystemExit(str(exc)) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
