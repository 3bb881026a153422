"""'Why together?': the X-means decision record of one DTD step and the evidence behind it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from explorer.figures.common import plain_names, short, style
from prm.methods import calls_right, true_groups
from prm.events import DTDResult
from prm.runs import Run, RunState
from prm.similarity import features
from prm.xmeans import bic


def _members(ids) -> str:
    return ", ".join(short(int(i)) for i in ids)


def decision_table(record: DTDResult, layer: int) -> pd.DataFrame:
    """Every split X-means tried at this step: parent cluster, its members, the two children,
    whole-model BIC before and after, and whether the split was kept (BIC must rise)."""
    rows = []
    for a in record.layers[layer]["xmeans"]["attempts"]:
        gain = None if a["children_bic"] is None else a["children_bic"] - a["parent_bic"]
        rows.append({
            "round": a["round"], "cluster": a["parent"], "members": _members(a["members"]),
            "child A": "" if a["children"] is None else _members(a["children"][0]),
            "child B": "" if a["children"] is None else _members(a["children"][1]),
            "BIC parent": a["parent_bic"], "BIC children": a["children_bic"], "ΔBIC": gain,
            "kept": a["kept"], "reason": a["reason"],
        })
    frame = pd.DataFrame(rows, columns=["round", "cluster", "members", "child A", "child B", "BIC parent",
                                        "BIC children", "ΔBIC", "kept", "reason"])
    bics = ["BIC parent", "BIC children", "ΔBIC"]  # refused splits have none: empty cells, not "None"
    frame[bics] = frame[bics].astype(float)
    return frame


def decision_tree(record: DTDResult, layer: int) -> go.Figure:
    """The same record as a tree: every cluster X-means tried to split is a node; kept
    splits branch into solid children, refused ones into grey dashed children (or none,
    when too few points left nothing to try)."""
    xm = record.layers[layer]["xmeans"]
    nodes: dict[str, dict[str, Any]] = {str(r): {"members": None, "depth": 0, "kind": "cluster"}
                                        for r in range(xm["k_init"])}
    edges: list[tuple[str, str]] = []
    for a in xm["attempts"]:
        parent = str(a["parent"])
        node = nodes.setdefault(parent, {"depth": 0, "kind": "cluster"})
        node.update(members=a["members"], attempt=a)
        if a["children"] is None:
            continue
        ids = [str(c) for c in a["child_ids"]] if a["kept"] else [f"{parent}{s}?" for s in "ab"]
        for cid, members in zip(ids, a["children"]):
            nodes[cid] = {"members": members, "depth": node["depth"] + 1, "kind": "cluster" if a["kept"] else "refused"}
            edges.append((parent, cid))
    if all(n.get("members") is None for n in nodes.values()):  # nothing tried: one cluster of all
        nodes["0"]["members"] = list(range(len(xm["labels"])))
    children = {p: [c for q, c in edges if q == p] for p in nodes}
    xpos: dict[str, float] = {}
    leaves = [0]

    def place(node: str) -> float:  # leaves left to right, parents over their children
        if children[node]:
            xpos[node] = float(np.mean([place(c) for c in children[node]]))
        else:
            xpos[node], leaves[0] = leaves[0], leaves[0] + 1
        return xpos[node]

    for root in [str(r) for r in range(xm["k_init"])]:
        place(root)
    fig = go.Figure()
    for p, c in edges:
        refused = nodes[c]["kind"] == "refused"
        fig.add_scatter(x=[xpos[p], xpos[c]], y=[-nodes[p]["depth"], -nodes[c]["depth"]], mode="lines",
                        line=dict(color="#bbb" if refused else "#555", dash="dot" if refused else "solid"),
                        hoverinfo="skip", showlegend=False)
    final = {str(c) for c in xm["cluster_ids"]}
    for cid, node in nodes.items():
        a, members = node.get("attempt"), node.get("members") or []
        if node["kind"] == "refused":
            colour, what = "#eeeeee", "proposed child, refused"
        else:
            colour, what = ("#2ca02c", "final cluster") if cid in final else ("#9ecae1", "split")
        detail = "" if a is None else f"<br>tried split: {a['reason']}" + (
            "" if a["children_bic"] is None else
            f"<br>BIC {a['parent_bic']:.1f} to {a['children_bic']:.1f} (change {a['children_bic'] - a['parent_bic']:+.1f})")
        fig.add_scatter(x=[xpos[cid]], y=[-node["depth"]], mode="markers+text", showlegend=False,
                        text=[_members(members)], textposition="bottom center",
                        marker=dict(size=18, color=colour, line=dict(width=1, color="#555")),
                        hovertext=[f"{what}<br>members: {_members(members)}{detail}"], hoverinfo="text")
    depth = max((n["depth"] for n in nodes.values()), default=0)
    fig.update_xaxes(visible=False, range=[-0.8, max(leaves[0] - 0.2, 0.8)])
    fig.update_yaxes(visible=False, range=[-depth - 0.8, 0.5])
    return style(fig, title="X-means splits (green = final clusters, grey = refused split)", height=180 + 90 * depth)


def pairwise(points: np.ndarray, metric: str) -> np.ndarray:
    """Euclidean distance (what X-means uses) or cosine similarity between embeddings."""
    points = np.asarray(points, dtype=float)
    if metric == "cosine":
        norm = np.linalg.norm(points, axis=1, keepdims=True)
        unit = points / np.where(norm == 0, 1, norm)
        return unit @ unit.T
    diff = points[:, None, :] - points[None, :, :]
    return np.sqrt((diff ** 2).sum(-1))


def pairwise_figure(matrix: np.ndarray, tasks, *, metric: str, labels: list[int]) -> go.Figure:
    n = len(matrix)
    ticks = [f"{short(i)} (c{labels[i]})" for i in range(n)]
    full = plain_names(tasks, n)
    hover = [[f"{full[i]}<br>{full[j]}<br>{metric}: {matrix[i, j]:.3f}" for j in range(n)] for i in range(n)]
    scale = dict(colorscale="RdBu", zmid=0, zmin=-1, zmax=1) if metric == "cosine" else dict(colorscale="Viridis_r")
    fig = go.Figure(go.Heatmap(z=matrix, x=ticks, y=ticks, text=np.round(matrix, 2), texttemplate="%{text}",
                               hovertext=hover, hoverinfo="text", xgap=1, ygap=1, **scale))
    fig.update_yaxes(autorange="reversed")
    title = "cosine similarity" if metric == "cosine" else "Euclidean distance"
    return style(fig, title=f"{title.capitalize()} (cN = X-means cluster)", height=420)


def oracle_figure(oracle, tasks, *, step: int, labels: list[int]) -> go.Figure:
    """The measured transfer among tasks 1..step+1: accuracy on task b (column) of a simple
    classifier trained on task a (row), recorded with sequences that measure it (mnist5k-*).
    High off-diagonal entries are what "similar" means in data; X-means sees only embeddings."""
    n = step + 1
    matrix = np.asarray(oracle, dtype=float)[:n, :n]
    ticks = [f"{short(i)} (c{labels[i]})" for i in range(n)]
    full = plain_names(tasks, n)
    hover = [[f"trained on {full[a]}<br>tested on {full[b]}<br>accuracy {matrix[a, b]:.3f}" for b in range(n)]
             for a in range(n)]
    fig = go.Figure(go.Heatmap(z=matrix, x=ticks, y=ticks, text=np.round(matrix, 2), texttemplate="%{text}",
                               hovertext=hover, hoverinfo="text", xgap=1, ygap=1, colorscale="Greens",
                               zmin=0, zmax=1))
    fig.update_yaxes(autorange="reversed", title="trained on")
    fig.update_xaxes(title="tested on")
    return style(fig, title="Measured transfer (oracle): accuracy of a classifier trained on the row task",
                 height=420)


def agreement(state: RunState) -> pd.DataFrame:
    """How well each DTD step matches the truth (``prm.methods.true_groups``: same family and
    same label set): the adjusted Rand index between X-means clusters and the true groups
    (1 = exactly the groups, about 0 = chance) and the fraction of earlier tasks X-means
    called right (similar or dissimilar)."""
    groups = true_groups(state.tasks)
    rows = []
    for t, record in sorted(state.dtd.items()):
        for layer, entry in enumerate(record.layers):
            labels = entry["xmeans"]["labels"]
            rows.append({"step": short(t), "layer": f"l{layer}", "k": entry["xmeans"]["k"],
                         "ARI": adjusted_rand_score(groups[: len(labels)], labels),
                         "calls right": calls_right(groups=groups, task=t, dissimilar=entry["dissimilar_xmeans"])})
    return pd.DataFrame(rows, columns=["step", "layer", "k", "ARI", "calls right"])


def agreement_figure(table: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    for layer, part in table.groupby("layer"):
        for column, dash in (("calls right", "solid"), ("ARI", "dot")):
            fig.add_scatter(x=part["step"], y=part[column], mode="lines+markers", name=f"{layer} {column}",
                            line={"dash": dash}, customdata=part["k"],
                            hovertemplate="after %{x}<br>" + column + " %{y:.2f}<br>k = %{customdata}<extra>"
                            + layer + "</extra>")
    fig.update_yaxes(title="agreement", range=[-0.55, 1.05])
    fig.update_xaxes(title="DTD step (new task)")
    return style(fig, title="X-means against the truth: earlier tasks called right (solid), ARI (dotted)",
                 height=300)


def jaccard(a: np.ndarray, b: np.ndarray, threshold: float = 0.5) -> float:
    """Overlap of two binarised masks: |a ∩ b| / |a ∪ b| (0 when both are empty)."""
    a, b = np.asarray(a) > threshold, np.asarray(b) > threshold
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def pair_evidence(run: Run, step: int, layer: int, i: int, j: int) -> dict[str, Any]:
    """Why tasks i and j (both <= step) ended in the same or different clusters at ``step``.

    Returns their distance against the spread inside clusters, their masks' Jaccard overlap
    per layer, and the whole-model BIC change of separating them (if together) or joining
    their clusters (if apart): X-means keeps a split only when it raises the BIC. All of it is
    measured on what X-means clustered: the embeddings as ``prm.features`` turned them.
    """
    record = run.state.dtd[step].layers[layer]["xmeans"]
    X = features(np.asarray(run.dtd_embeddings(step, layer), dtype=float),
                 run.state.config.get("prm", {}).get("features", "raw"))
    labels = np.asarray(record["labels"])
    centers = np.array([X[labels == c].mean(axis=0) for c in range(record["k"])])  # KMeans centres = means
    floor = record["var_floor"]
    dist = pairwise(X, "euclidean")
    within = [dist[a, b] for a in range(len(X)) for b in range(a + 1, len(X)) if labels[a] == labels[b]]
    current = bic(X, labels, centers, var_floor=floor)
    together = labels[i] == labels[j]
    if together:
        members = np.flatnonzero(labels == labels[i])
        km = KMeans(n_clusters=2, init=X[[i, j]], n_init=1).fit(X[members])
        new_labels = labels.copy()
        new_labels[members[km.labels_ == 1]] = labels.max() + 1
        new_centers = np.vstack([centers, km.cluster_centers_[1]])
        new_centers[labels[i]] = km.cluster_centers_[0]
        change = "separating them (2-means on their cluster, seeded at the two tasks)"
    else:
        merged = np.where(labels == labels[j], labels[i], labels)
        _, new_labels = np.unique(merged, return_inverse=True)
        new_centers = np.array([X[new_labels == c].mean(axis=0) for c in range(new_labels.max() + 1)])
        change = "joining their two clusters"
    proposed = bic(X, new_labels, new_centers, var_floor=floor)
    overlap = {}
    for l in range(len(run.state.dtd[step].layers)):
        mi, mj = run.mask(i, l), run.mask(j, l)
        overlap[f"l{l}"] = None if mi is None or mj is None else jaccard(mi, mj)
    return {
        "together": bool(together), "distance": float(dist[i, j]),
        "within_mean": float(np.mean(within)) if within else None,
        "within_max": float(np.max(within)) if within else None,
        "between_mean": float(np.mean([dist[a, b] for a in range(len(X)) for b in range(a + 1, len(X))
                                       if labels[a] != labels[b]])) if len(set(labels)) > 1 else None,
        "cosine": float(pairwise(X[[i, j]], "cosine")[0, 1]),
        "jaccard": overlap, "bic_now": float(current), "bic_change": float(proposed - current), "change": change,
    }
