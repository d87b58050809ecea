"""A 2-D map of logit vectors (UMAP, McInnes et al. 2018), fitted jointly over the compared models.

All models' logit vectors at one epsilon go into one fit, so their points share the map: where a
standard model's adversarial logits land relative to an AT model's is visible at a glance. Maps are
cached on disk by the content of the logits and the UMAP settings; the first fit in a process
also compiles UMAP's numba kernels (about 10-20 s on a laptop CPU), later fits take about a second.
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from core.app.views import LogitSet
from core.config import cache_dir, stable_key
from core.engine import analysis
from core.storage import atomic_write, report_corrupt

COLUMNS = ["model", "idx", "x", "y", "label", "pred", "correct", "confidence", "max_logit"]

_compiled = {"done": False}  # whether this process has fitted UMAP once (numba kernels compiled)


def embedding_key(bundle: LogitSet, eps: float, n_neighbors: int, min_dist: float, seed: int) -> str:
    """A stable name for a map: a hash of the logits it embeds and the UMAP settings."""
    i = bundle.eps_index(eps)
    h = hashlib.sha256()
    for name in bundle.names:
        h.update(name.encode())
        h.update(np.ascontiguousarray(bundle.logits[name][i]).tobytes())
    return stable_key({"logits": h.hexdigest(), "n_neighbors": n_neighbors, "min_dist": min_dist, "seed": seed})


def embedding_path(key: str) -> Path:
    return cache_dir() / "embeddings" / f"{key}.parquet"


def cached_embedding(bundle: LogitSet, eps: float, n_neighbors: int = 15, min_dist: float = 0.1,
                     seed: int = 0) -> pd.DataFrame | None:
    """The map if it was computed before, else None (a file check and a small read)."""
    path = embedding_path(embedding_key(bundle, eps, n_neighbors, min_dist, seed))
    if not path.is_file():
        return None
    try:
        out = pd.read_parquet(path)
        if list(out.columns) != COLUMNS or len(out) != len(bundle.names) * len(bundle.labels):
            raise ValueError(f"columns {list(out.columns)} and {len(out)} rows are not this map's")
    except Exception as exc:  # truncated, foreign or another map's file: reported once, then recomputed
        report_corrupt(path, exc)
        return None
    return out


def first_fit_pending() -> bool:
    """True until this process has fitted UMAP once (the first fit compiles, so it is slow)."""
    return not _compiled["done"]


def compute_embedding(bundle: LogitSet, eps: float, n_neighbors: int = 15, min_dist: float = 0.1,
                      seed: int = 0) -> pd.DataFrame:
    """Fit UMAP on every model's (N, K) logits at `eps` stacked, cache and return the map.

    Columns: model, idx, x, y, label, pred, correct, confidence, max_logit.
    """
    import umap  # imported here: it takes seconds and only this page needs it

    path = embedding_path(embedding_key(bundle, eps, n_neighbors, min_dist, seed))
    i = bundle.eps_index(eps)
    z = np.concatenate([bundle.logits[n][i] for n in bundle.names]).astype(np.float32)
    n_neighbors = int(min(max(2, n_neighbors), len(z) - 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # umap warns that a seed makes it single-threaded: intended
        xy = umap.UMAP(n_neighbors=n_neighbors, min_dist=float(min_dist), random_state=seed).fit_transform(z)
    _compiled["done"] = True
    parts = []
    for j, name in enumerate(bundle.names):
        t = analysis.per_sample(bundle.logits[name][i], bundle.labels)
        n = len(t)
        parts.append(pd.DataFrame({
            "model": name, "idx": np.arange(n), "x": xy[j * n:(j + 1) * n, 0], "y": xy[j * n:(j + 1) * n, 1],
            "label": [bundle.classes[k] for k in t["label"]], "pred": [bundle.classes[k] for k in t["pred"]],
            "correct": t["correct"].to_numpy(), "confidence": t["confidence"].to_numpy(),
            "max_logit": t["max_logit"].to_numpy(),
        }))
    out = pd.concat(parts, ignore_index=True)
    buffer = io.BytesIO()
    out.to_parquet(buffer, index=False)
    atomic_write(path, buffer.getvalue())
    return out


def selection_summary(points: pd.DataFrame, models: Sequence[str] | None = None) -> pd.DataFrame:
    """Per model among selected map points: how many, their share of the selection, accuracy, mean confidence.

    With `models`, every one of them has a row in that order (0 points when the selection has none of it).
    """
    g = points.groupby("model", sort=False, observed=True)
    out = pd.DataFrame({"points": g.size(), "accuracy": g["correct"].mean(),
                        "mean confidence": g["confidence"].mean()})
    if models is not None:
        out = out.reindex(list(models)).fillna({"points": 0}).astype({"points": int})
    out.insert(1, "share", out["points"] / max(len(points), 1))
    return out.rename_axis("model").reset_index()


def spread(points: pd.DataFrame, models: Sequence[str], k: int = 48) -> pd.DataFrame:
    """At most k of the points, as evenly from each model as they allow (a model with few gives what it
    has, the others share the rest), each model's in map order; so the thumbnails show every model."""
    by_model = [points[points["model"] == m] for m in models]
    take, left = [0] * len(models), min(k, len(points))
    while left > 0:
        open_ = [i for i, part in enumerate(by_model) if take[i] < len(part)]
        if not open_:  # the rest are points of models not listed
            break
        for i in open_[:left]:
            take[i] += 1
        left -= min(len(open_), left)
    return pd.concat([part.head(n) for part, n in zip(by_model, take)] or [points.iloc[0:0]])


Bounds = tuple[float, float, float, float]  # x0, x1, y0, y1 of a rectangle on the map


def link_bounds(bounds: Sequence[float], digits: int = 3) -> Bounds:
    """A rectangle rounded outward to `digits` decimals, for a short link that still holds every point of it."""
    x0, x1, y0, y1 = (float(v) * 10 ** digits for v in bounds)
    return tuple(round(f(v) / 10 ** digits, digits) for f, v in
                 ((math.floor, x0), (math.ceil, x1), (math.floor, y0), (math.ceil, y1)))


def bounds_text(bounds: Bounds) -> str:
    """The link's text of a rectangle: "x0,x1,y0,y1", as short as the numbers allow (`parse_bounds` reads it)."""
    return ",".join(f"{v:.6f}".rstrip("0").rstrip(".") for v in bounds)


def parse_bounds(text: str) -> Bounds | None:
    """A link's rectangle "x0,x1,y0,y1" (finite, x0 <= x1, y0 <= y1), or None if the text is not one."""
    try:
        v = [float(t) for t in str(text).split(",")]
    except ValueError:
        return None
    if len(v) != 4 or not all(math.isfinite(t) for t in v) or v[0] > v[1] or v[2] > v[3]:
        return None
    return v[0], v[1], v[2], v[3]


def points_in(emb: pd.DataFrame, bounds: Bounds) -> pd.DataFrame:
    """The map's points inside the rectangle (edges included)."""
    x0, x1, y0, y1 = bounds
    return emb[emb["x"].between(x0, x1) & emb["y"].between(y0, y1)]
