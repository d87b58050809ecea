"""The sidebar's data settings: a data folder (the CLI's --data-dir) and your own data as a dataset."""

from __future__ import annotations

import numpy as np
import pytest
from apptest import open_page, texts
from tiny_formats import accept_cifar10_files, block_network, write_cifar10

from core.app import jobs


@pytest.fixture(autouse=True)
def no_jobs_left(tmp_path, monkeypatch):
    """No job outlives a test; the app may read data under tmp_path (LOGITSCOPE_DATA, see core.config)."""
    monkeypatch.setenv("LOGITSCOPE_DATA", str(tmp_path))
    jobs.clear()
    yield
    jobs.clear()


def test_the_data_folder_is_where_datasets_are_read_from(tmp_path, monkeypatch):
    block_network(monkeypatch)
    write_cifar10(tmp_path / "data", per_batch=2, n_test=4)
    accept_cifar10_files(monkeypatch, tmp_path / "data")
    # L2 epsilons depend on the image size, so this view reads the dataset: from the folder, offline
    at = open_page("overview", {"ds": "cifar10", "norm": "l2", "dd": str(tmp_path / "data")})
    assert not at.exception and not at.error, texts(at)
    assert at.sidebar.text_input(key="w.dd").value == str(tmp_path / "data")
    assert at.sidebar.select_slider(key="w.eps").options[-1] == "1.7"  # 16/255 * sqrt(3072) / 2 = 1.74
    assert at.query_params["dd"] in (str(tmp_path / "data"), [str(tmp_path / "data")])
    # without it, the offline error names the setting
    bare = open_page("overview", {"ds": "cifar10", "norm": "l2"})
    assert "data-folder setting" in texts(bare) and not bare.exception


def test_a_folder_that_does_not_exist_is_refused_with_a_message(tmp_path, monkeypatch):
    at = open_page("overview", {"dd": str(tmp_path / "nowhere")})
    assert "Ignored link settings: dd=" in texts(at) and at.sidebar.text_input(key="w.dd").value == ""
    at.sidebar.text_input(key="w.dd").input(str(tmp_path / "nowhere")).run()
    assert not at.exception
    assert "is not an existing folder" in texts(at) and at.sidebar.text_input(key="w.dd").value == ""
    at.sidebar.text_input(key="w.dd").input(str(tmp_path)).run()
    assert "is not an existing folder" not in texts(at) and at.sidebar.text_input(key="w.dd").value == str(tmp_path)


def test_your_own_data_becomes_a_dataset_of_the_sidebar(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "mine.npz", images=rng.integers(0, 256, (40, 8, 8), dtype=np.uint8),
             labels=np.arange(40) % 4)
    at = open_page("overview", {"dd": str(tmp_path)})
    at.sidebar.text_input(key="w.own").input("npz:nothing.npz").run()
    assert "is not an .npz file" in texts(at) and at.sidebar.selectbox(key="w.ds").value == "digits"
    at.sidebar.text_input(key="w.own").input("npz:mine.npz").run()  # relative to the data folder
    assert not at.exception, [e.message for e in at.exception]
    name = at.sidebar.selectbox(key="w.ds").value
    assert name.startswith(f"npz:{tmp_path / 'mine.npz'}@") and name in at.sidebar.selectbox(key="w.ds").options
    assert set(at.dataframe[0].value["status"]) == {"not trained"}
    assert all("digits" in j.label for j in jobs.active())  # own data trains on request only (digits by itself)
    again = open_page("overview", {"ds": name})  # a link to it opens it too
    assert again.sidebar.selectbox(key="w.ds").value == name and not again.exception
