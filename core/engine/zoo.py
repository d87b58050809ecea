"""The RobustBench model zoo (Croce et al. 2021) as a source of models: names, download, offline errors.

Models come from RobustBench's registry (dataset -> threat model -> name) through
`robustbench.utils.load_model`, called with keyword arguments only, and are wrapped as `ZooModel`:
float [0, 1] (N, C, H, W) -> logits (N, K), like every Logitscope model. Checkpoints live in
RobustBench's layout under `model_dir()` = cache_dir()/"models"/"robustbench":
<dataset>/<threat>/<name>.pt, or <name>.pt_m0.pt, <name>.pt_m1.pt, ... for ensembles; a checkpoint
downloaded by hand goes there.

Compatibility: robustbench 1.1.1 from PyPI imports `autoattack`, which its dependency installs as
`pyautoattack`, and needs `pkg_resources` (setuptools < 81); `import_robustbench` bridges both.
Some zoo models (ensembles, mixtures) return probabilities or log-probabilities instead of logits:
`ZooModel.output_kind` says which (measured on a probe batch), and probabilities are turned into
log-probabilities, so attacks and softmax still work but the values are not the model's logits.

Example:
    >>> model = load_zoo_model("Wong2020Fast", dataset="cifar10", threat="Linf")
    >>> key = zoo_model_key("cifar10", "Linf", "Wong2020Fast")  # a model key for core.engine.logits
    >>> rec = get_or_compute(zoo_source("Wong2020Fast"), key, DataSpec("cifar10", "test", 1000))
"""

from __future__ import annotations

import contextlib
import difflib
import glob
import importlib.util
import io
import logging
import sys
import warnings
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch
from filelock import FileLock
from torch import nn

from core.config import cache_dir, demo_mode, stable_key
from core.errors import LogitscopeError

log = logging.getLogger(__name__)

ZOO_DATASETS = ("cifar10", "cifar100", "imagenet")
ZOO_THREATS = ("Linf", "L2", "corruptions", "corruptions_3d")
INPUT_SHAPES = {"cifar10": (3, 32, 32), "cifar100": (3, 32, 32), "imagenet": (3, 224, 224)}
LOGITSCOPE_DATASETS = {"cifar10": "cifar10"}  # zoo dataset -> Logitscope dataset of the same images and labels
OUTPUT_KINDS = ("logits", "probabilities", "log-probabilities")


def model_dir() -> Path:
    """Root of downloaded RobustBench checkpoints: cache_dir()/"models"/"robustbench"."""
    return cache_dir() / "models" / "robustbench"


def zoo_model_key(dataset: str, threat: str, name: str) -> str:
    """The model key of a zoo model in the logits cache (what a ModelSpec's key is for our own models)."""
    return stable_key(["robustbench", dataset, threat, name])


@dataclass(frozen=True)
class ZooEntry:
    """One model of the zoo."""

    dataset: str      # "cifar10", "cifar100" or "imagenet"
    threat: str       # "Linf", "L2", "corruptions" or "corruptions_3d"
    name: str         # e.g. "Wong2020Fast"
    checkpoints: int  # checkpoint files; 0 when RobustBench fetches it through timm instead
    gdrive_ids: tuple[str, ...] = ()

    @property
    def ensemble(self) -> bool:
        """Several checkpoints: ensembles and mixtures, which often return probabilities, not logits."""
        return self.checkpoints > 1

    @property
    def key(self) -> str:
        return zoo_model_key(self.dataset, self.threat, self.name)

    def paths(self, root: str | Path | None = None) -> list[Path]:
        """Where RobustBench keeps this model's checkpoint files under `root` (default `model_dir()`)."""
        folder = Path(root if root is not None else model_dir()) / self.dataset / self.threat.replace("_3d", "")
        if self.checkpoints <= 1:
            return [folder / f"{self.name}.pt"] if self.checkpoints else []
        return [folder / f"{self.name}.pt_m{i}.pt" for i in range(self.checkpoints)]

    def downloaded(self, root: str | Path | None = None) -> bool:
        paths = self.paths(root)
        return bool(paths) and all(p.is_file() for p in paths)


def _alias_autoattack() -> None:
    """Make `import autoattack[.x]` give the installed `pyautoattack[.x]` modules (the same objects)."""
    if "autoattack" in sys.modules or importlib.util.find_spec("autoattack") is not None:
        return  # a real `autoattack` is installed: leave it alone
    import pyautoattack  # noqa: F401  (its __init__ imports every submodule RobustBench uses)

    for name, module in list(sys.modules.items()):
        if name == "pyautoattack" or name.startswith("pyautoattack."):
            sys.modules.setdefault("autoattack" + name[len("pyautoattack"):], module)


def import_robustbench():
    """The `robustbench` package, importable despite its packaging (see the module docstring)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pkg_resources' and timm's deprecation notices
            import pkg_resources  # noqa: F401
    except ImportError as exc:
        raise LogitscopeError("RobustBench 1.1.1 needs pkg_resources, which setuptools 81 removed: run "
                              "pip install 'setuptools<81'.") from exc
    try:
        _alias_autoattack()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import robustbench
            import robustbench.utils  # noqa: F401
    except ImportError as exc:
        raise LogitscopeError(f"RobustBench cannot be imported ({exc}): run pip install -r requirements.txt.") from exc
    return robustbench


@lru_cache(maxsize=1)
def _all_entries() -> tuple[ZooEntry, ...]:
    from robustbench.model_zoo import model_dicts  # importable once import_robustbench has run

    out = []
    for ds, threats in model_dicts.items():
        for tm, models in threats.items():
            for name, info in models.items():
                ids = info.get("gdrive_id")
                ids = tuple(ids) if isinstance(ids, list) else (() if ids is None else (ids,))
                out.append(ZooEntry(ds.value, tm.value, name, len(ids), ids))
    return tuple(out)


def _pick(value: str | None, choices: tuple[str, ...], what: str) -> str | None:
    if value is None:
        return None
    for c in choices:
        if c.lower() == value.lower():
            return c
    raise LogitscopeError(f"Unknown RobustBench {what} {value!r}: choose one of {', '.join(choices)}.")


def list_zoo(dataset: str | None = None, threat: str | None = None) -> list[ZooEntry]:
    """The zoo's models, optionally of one dataset and one threat model, in RobustBench's order."""
    dataset, threat = _pick(dataset, ZOO_DATASETS, "dataset"), _pick(threat, ZOO_THREATS, "threat model")
    import_robustbench()
    return [e for e in _all_entries() if dataset in (None, e.dataset) and threat in (None, e.threat)]


def find_entry(name: str, dataset: str = "cifar10", threat: str = "Linf") -> ZooEntry:
    """The zoo entry of that name, or a LogitscopeError that suggests close names."""
    entries = {e.name: e for e in list_zoo(dataset, threat)}
    if name in entries:
        return entries[name]
    close = difflib.get_close_matches(name, list(entries), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else " List them with: python -m core zoo."
    raise LogitscopeError(f"RobustBench has no model {name!r} for {dataset} {threat}.{hint}")


def looks_like_checkpoint(path: Path) -> bool:
    """True for a complete torch.save zip archive or a legacy torch.save pickle (cheap: reads the header)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    if head.startswith(b"PK"):
        return zipfile.is_zipfile(path)  # a truncated download lacks the central directory at the end
    return head[:1] == b"\x80"  # pickle protocol 2+


def _what(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    if not head:
        return "an empty file"
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
        return "an HTML page (Google Drive refused the download, often because of its daily quota)"
    if head.startswith(b"pk"):
        return "a truncated download"
    return "not a PyTorch checkpoint"


def _unloadable(path: Path) -> bool:
    """A checkpoint-looking file torch cannot read at all (truncated, corrupted)."""
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        return "Weights only load failed" not in str(exc)  # that one is a complete, safe-to-refuse file
    return False


def _remove_broken(entry: ZooEntry, root: Path, deep: bool) -> list[tuple[Path, str]]:
    """Delete non-checkpoints at the entry's paths (returned, with what they were) and leftovers of
    interrupted downloads next to them."""
    paths = entry.paths(root)
    removed = []
    if paths and paths[0].parent.is_dir():  # gdown's temporary files: <name>.pt<random>tmp
        for f in paths[0].parent.glob(f"{glob.escape(entry.name)}.pt*"):
            if f not in paths and f.is_file() and f.suffix != ".pt":
                f.unlink(missing_ok=True)
                log.info("Removed %s, left over by an interrupted download.", f)
    for p in paths:
        if not p.is_file():
            continue
        if not looks_like_checkpoint(p):
            what = _what(p)
        elif deep and _unloadable(p):
            what = "a corrupted or truncated checkpoint"
        else:
            continue
        p.unlink(missing_ok=True)
        removed.append((p, what))
    return removed


def _sources(entry: ZooEntry, paths: list[Path]) -> str:
    return "; ".join(f"https://drive.google.com/uc?id={g} -> {p}" for g, p in zip(entry.gdrive_ids, paths))


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class ZooModel(nn.Module):
    """A RobustBench model as Logitscope sees it: float [0, 1] (N, C, H, W) -> logits (N, K).

    `output_kind` is what the zoo model itself returns ("logits", "probabilities" or
    "log-probabilities"); for the latter two the outputs are log-probabilities, not logits, and the
    app says so. `true_logits` is True only for "logits".
    """

    def __init__(self, net: nn.Module, entry: ZooEntry, output_kind: str):
        super().__init__()
        if output_kind not in OUTPUT_KINDS:
            raise ValueError(f"output_kind must be one of {OUTPUT_KINDS}")
        self.net, self.entry, self.output_kind = net, entry, output_kind

    @property
    def true_logits(self) -> bool:
        return self.output_kind == "logits"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        out = out[0] if isinstance(out, (tuple, list)) else out
        if self.output_kind == "probabilities":
            out = torch.log(out.clamp_min(torch.finfo(out.dtype).tiny))
        return out


def output_kind(out: torch.Tensor, tol: float = 1e-3) -> str:
    """"probabilities" if rows are non-negative and sum to 1, "log-probabilities" if their logsumexp
    is 0, else "logits". out: (N, K)."""
    out = out.detach().float()
    if out.ndim != 2:
        raise LogitscopeError(f"A zoo model returned shape {tuple(out.shape)} instead of (N, classes).")
    if (out >= -1e-6).all() and ((out.sum(dim=1) - 1).abs() <= tol).all():
        return "probabilities"
    if (out <= 1e-6).all() and (out.logsumexp(dim=1).abs() <= tol).all():
        return "log-probabilities"
    return "logits"


def detect_output_kind(net: nn.Module, in_shape: tuple[int, int, int], device: str | torch.device = "cpu",
                       n: int = 2) -> str:
    """`output_kind` of `net` on a fixed batch of n uniform random images."""
    x = torch.rand((n, *in_shape), generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        out = net(x)
    return output_kind(out[0] if isinstance(out, (tuple, list)) else out)


def load_zoo_model(name: str, dataset: str = "cifar10", threat: str = "Linf", device: str | torch.device = "cpu",
                   root: str | Path | None = None) -> ZooModel:
    """A zoo model in eval mode on `device`, downloaded into `root` (default `model_dir()`) if missing.

    Raises LogitscopeError when the name is unknown, the download fails (saying where to put the file
    by hand), or a file at the checkpoint path is not a checkpoint (it is removed first).
    """
    if demo_mode():  # checked first: importing RobustBench alone costs a small host hundreds of MB
        raise LogitscopeError(f"The hosted demo does not load RobustBench models ({name}): their logits come from "
                              "the bundle. Run the app locally to use the model itself.")
    entry = find_entry(name, dataset, threat)
    rb = import_robustbench()
    root = Path(root) if root is not None else model_dir()
    paths = entry.paths(root)
    folder = root / entry.dataset / entry.threat.replace("_3d", "")
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / f".{entry.name}.lock")):  # two processes: one downloads, the other waits
        broken = _remove_broken(entry, root, deep=False)
        if broken:
            raise LogitscopeError(_broken_message(entry, broken, paths))
        said = io.StringIO()
        try:
            with contextlib.redirect_stdout(said), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                net = rb.utils.load_model(model_name=entry.name, dataset=entry.dataset, threat_model=entry.threat,
                                          model_dir=str(root))
        except Exception as exc:  # RobustBench raises anything: network, HTML, state-dict mismatches
            broken = _remove_broken(entry, root, deep=True)
            if broken:
                raise LogitscopeError(_broken_message(entry, broken, paths)) from exc
            if not paths:
                raise LogitscopeError(f"RobustBench fetches {entry.name} through timm from the Hugging Face hub (into "
                                      f"timm's cache), and that failed ({_short(exc)}): connect to the internet and "
                                      "run again.") from exc
            missing = [p for p in paths if not p.is_file()]
            if missing:
                raise LogitscopeError(f"Could not download RobustBench model {entry.name} ({_short(exc)}). Connect to "
                                      f"the internet and run again, or download by hand: {_sources(entry, paths)}.") from exc
            if "Weights only load failed" in str(exc):
                raise LogitscopeError(f"{entry.name}'s checkpoint holds Python objects besides tensors, which "
                                      "Logitscope does not unpickle (torch weights_only=True): this zoo model is "
                                      "not supported.") from exc
            raise LogitscopeError(f"RobustBench could not build {entry.name} from {', '.join(map(str, paths))} "
                                  f"({_short(exc)}): delete the file(s) to download them again.") from exc
        finally:
            if said.getvalue().strip():
                log.info("robustbench: %s", said.getvalue().strip())
    net = net.to(device).eval()
    return ZooModel(net, entry, detect_output_kind(net, INPUT_SHAPES[entry.dataset], device)).eval()


def _broken_message(entry: ZooEntry, broken: list[tuple[Path, str]], paths: list[Path]) -> str:
    what = "; ".join(f"{p} was {w}" for p, w in broken)
    return (f"{what}: removed. Run again to retry the download of {entry.name}, or download it by hand: "
            f"{_sources(entry, paths)}.")


def zoo_source(name: str, dataset: str = "cifar10", threat: str = "Linf",
               device: str | torch.device = "cpu") -> Callable[[], nn.Module]:
    """A loader for `core.engine.logits.get_or_compute`: the model is only loaded on a cache miss."""
    return lambda: load_zoo_model(name, dataset, threat, device)


def logitscope_dataset(dataset: str) -> str:
    """The Logitscope dataset whose test images a zoo dataset's models classify (only cifar10 has one)."""
    if dataset not in LOGITSCOPE_DATASETS:
        raise LogitscopeError(f"Logitscope has no loader for {dataset} yet: evaluate its zoo models on your own "
                              f"{dataset} images as npz:<path> (images uint8, labels int).")
    return LOGITSCOPE_DATASETS[dataset]
