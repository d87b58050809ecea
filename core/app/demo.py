"""Hosted-demo mode: serve one bundle (core.app.bundle_read) on a small CPU-only host, read-only.

Set `LOGITSCOPE_DEMO=<bundle path or http(s) URL>` (or the Streamlit secret of that name) and start the
app. A URL is downloaded once per process into a temporary folder (its manifest's checksums guard the
content; nothing in a bundle is unpickled, whoever serves it). At
the first page request `start` verifies the bundle and unpacks it into a fresh temporary cache folder,
then points LOGITSCOPE_CACHE there. Unpacking rather than reading from the zip keeps every code path of
the app unchanged, never writes to the bundle (it is opened once, read-only), costs disk rather than
memory (a digits bundle is a few MB), and gives live lab runs a scratch cache that vanishes with the
process. The bundle's images are served in place of the dataset's loader (`core.engine.data.provide`), so no
dataset is downloaded.

What the demo disables is decided here, not in the pages: no training of missing models or teachers,
no new logits (the attack is the bundle's), no RobustBench downloads, no other datasets or data folders;
live distillation only when the bundle carries digits-sized training data, at most LAB_MAX_EPOCHS
epochs, one run at a time.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from core.app import bundle_check, bundle_read
from core.config import DEMO_ENV, demo_mode
from core.engine.data import provide
from core.errors import LogitscopeError
from core.storage import atomic_file

ENV = DEMO_ENV
LAB_MAX_EPOCHS = 20  # a digits student: 20 epochs take about 5 s on one CPU core
LAB_MAX_REPLICATES = 1  # a replicate is three students (the run's and two baselines), each under AutoAttack
DISABLED = ("training missing models and teachers", "computing logits under other attack settings",
            "downloading RobustBench models", "other datasets and data folders")


def active() -> bool:
    """True when the app serves a bundle (LOGITSCOPE_DEMO is set)."""
    return demo_mode()


@dataclass(frozen=True)
class Demo:
    """A bundle being served: where it is, the cache it was unpacked into, and its manifest."""

    bundle: Path
    cache: Path
    manifest: dict

    @property
    def dataset(self) -> str:
        return self.manifest["dataset"]

    @property
    def norm(self) -> str:
        return self.manifest["attack"]["norm"]

    @property
    def steps(self) -> int:
        return int(self.manifest["attack"]["steps"])

    @property
    def live_lab(self) -> bool:
        """Live distillation is possible: the bundle carries the training images."""
        return bool(self.manifest.get("train_images"))

    def describe(self) -> str:
        shown = [m["name"] for m in self.manifest["models"] if m.get("shown")]
        return (f"{self.bundle.name}: {self.dataset}, {len(shown)} models, {self.norm} PGD-{self.steps} over "
                f"{len(self.manifest['eps'])} epsilons, created {self.manifest['created']}")


_started: dict[tuple, Demo] = {}
_datasets: dict[tuple, object] = {}  # the bundle's images, served in place of the dataset's loader
_lock = threading.Lock()


def start(path: str | Path | None = None) -> Demo:
    """Serve the bundle at `path` (default: $LOGITSCOPE_DEMO): unpack it once per process, use its cache.

    Every call points LOGITSCOPE_CACHE at the unpacked copy and serves the bundle's images, so it is
    cheap to call on every page run. Raises LogitscopeError for a missing, corrupt or foreign bundle.
    """
    raw = str(path or os.environ.get(ENV) or "")
    if not raw:
        raise LogitscopeError(f"No bundle to serve: set {ENV} to a bundle made by python -m core bundle.")
    path = _fetch(raw) if raw.startswith(("http://", "https://")) else Path(raw).expanduser().resolve()
    if not path.is_file():
        raise LogitscopeError(f"{ENV}={raw}: no such file. Point it at a bundle made by python -m core bundle "
                              "(a relative path starts in the folder the app was started from).")
    st = path.stat()
    ident = (str(path), st.st_size, st.st_mtime_ns)
    with _lock:
        demo = _started.get(ident)
        if demo is None or not demo.cache.is_dir() or ident not in _datasets:
            cache = Path(tempfile.mkdtemp(prefix="logitscope-demo-"))
            atexit.register(shutil.rmtree, cache, True)
            try:  # every check passes before anything is served: a refused bundle leaves nothing behind
                manifest = bundle_read.extract(path, cache)  # checks the manifest, every member and every array
                dataset = bundle_read.bundled_dataset(cache, manifest)
            except BaseException:
                shutil.rmtree(cache, ignore_errors=True)
                raise
            demo = Demo(path, cache, manifest)
            _started[ident], _datasets[ident] = demo, dataset
        os.environ["LOGITSCOPE_CACHE"] = str(demo.cache)
        provide(_datasets[ident])
    return demo


_fetched: dict[str, Path] = {}


def _fetch(url: str) -> Path:
    """Download a bundle once per process (into a temporary folder removed at exit)."""
    import urllib.request  # only for a bundle given as a URL

    with _lock:
        if url in _fetched and _fetched[url].is_file():
            return _fetched[url]
        folder = Path(tempfile.mkdtemp(prefix="logitscope-bundle-"))
        atexit.register(shutil.rmtree, folder, True)
        target = folder / "bundle.zip"
        most = bundle_read.max_bundle_bytes()
        try:
            with urllib.request.urlopen(url, timeout=120) as r, atomic_file(target) as f:
                n = 0
                while chunk := r.read(min(1 << 20, most + 1 - n)):
                    n += len(chunk)
                    if n > most:
                        raise LogitscopeError(f"The demo bundle at {url} is larger than the "
                                              f"{bundle_check.MAX_UNPACKED_MB} MB a bundle may unpack to: it is not a "
                                              "Logitscope bundle, or not one a small host can serve.")
                    f.write(chunk)
        except OSError as exc:  # URLError, HTTPError and timeouts are OSErrors
            raise LogitscopeError(f"Could not download the demo bundle from {url} ({exc}): check the address, or "
                                  f"commit the bundle to the repository and set {ENV} to its path.") from exc
        _fetched[url] = target
        return target


def check_lab(demo: Demo, epochs: int, teacher_trained: bool, busy: bool, replicates: int = 1) -> None:
    """Raise LogitscopeError unless the demo can run this distillation now."""
    if not demo.live_lab:
        raise LogitscopeError(f"Live distillation is off in this demo: {demo.dataset} is too large to train on its "
                              "small host. The run table shows the bundled runs; run the app locally to distil.")
    if epochs > LAB_MAX_EPOCHS:
        raise LogitscopeError(f"The demo distils at most {LAB_MAX_EPOCHS} epochs: lower the epochs.")
    if replicates > LAB_MAX_REPLICATES:
        raise LogitscopeError(f"The demo distils at most {LAB_MAX_REPLICATES} replicate per run (each replicate "
                              "distils three students and attacks them with AutoAttack): set Replicates to 1, or run "
                              "the app locally for intervals over seeds.")
    if not teacher_trained:
        raise LogitscopeError("This teacher is not in the demo's bundle, and the demo does not train teachers: "
                              "pick another teacher.")
    if busy:
        raise LogitscopeError("The demo runs one job at a time: wait for the running one to finish (see the sidebar).")
