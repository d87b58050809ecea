"""A 2-D map of logit vectors (UMAP, McInnes et al. 2018), fitted jointly over the compared models.

All models' logit vectors at one epsilon go into one fit, so their points share the map: where a
standard model's adversarial logits land relative to an AT model's is visible at a glance. Maps are
cached on disk by the content of the logits and the UMAP settings; the first fit in a process
also compiles UMAP's numba kernels (about 10-20 s on a laptop CPU), later fits take about a second.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

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


def selection_summary(points: pd.DataFrame) -> pd.DataFrame:
    """Per model among selected map points: how many, their accuracy and mean confidence."""
    g = points.groupby("model", sort=False)
    return pd.DataFrame({"points": g.size(), "accuracy": g["correct"].mean(),
                         "mean confidence": g["confidence"].mean()}).reset_index()
