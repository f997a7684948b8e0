"""`course.py open --no-browser` serves JupyterLab with chapter 0 ready."""

import json
import shutil
import urllib.request

import pytest

from ppo_lib.course import load_book
from tests.lab import ROOT, LabServer


@pytest.fixture
def server():
    workspace = ROOT / "build" / "test-workspace-launcher"
    shutil.rmtree(workspace, ignore_errors=True)
    lab = LabServer(workspace, ROOT / "artifacts" / "launcher-lab.log").start()
    yield lab
    lab.stop()
    assert lab.proc.poll() is not None, "the server must be stopped"


def test_open_prints_the_url_of_chapter_0_and_serves_it(server):
    first = load_book().chapters[0]
    assert server.url.endswith(f"/lab/tree/build/test-workspace-launcher/{first.stem}.ipynb?token={server.token}")
    with urllib.request.urlopen(server.api(f"contents/build/test-workspace-launcher/{first.stem}.ipynb")) as r:
        model = json.load(r)
    assert model["type"] == "notebook"
    assert model["content"]["metadata"]["kernelspec"]["name"] == "python3"
    with urllib.request.urlopen(server.url) as r:  # the lab page itself, with the token
        assert r.status == 200
    # the chapter text files open as notebooks (the jupytext default viewer)
    settings_url = (f"http://127.0.0.1:{server.port}/lab/api/settings/"
                    f"@jupyterlab/docmanager-extension:plugin?token={server.token}")
    with urllib.request.urlopen(settings_url) as r:
        settings = json.load(r)
    # overrides.json replaces the schema's defaults (the user's own settings still win)
    defaults = settings["schema"]["properties"]["defaultViewers"]["default"]
    assert defaults["python"] == "Jupytext Notebook", defaults
