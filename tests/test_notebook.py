"""notebooks/ are executed with a real Jupyter kernel on tiny input, so they cannot rot."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "notebooks")


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(NOTEBOOKS) if n.endswith(".ipynb")))
def test_notebook_runs_on_tiny_input(name, monkeypatch):
  # No video: the notebook tracks a short clip made from a bundled face (ground truth known).
  monkeypatch.setenv("REDNET_VIDEO", "")
  monkeypatch.setenv("REDNET_FACES", "")
  monkeypatch.setenv("REDNET_MAX_FRAMES", "5")
  notebook = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
  NotebookClient(notebook, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": NOTEBOOKS}}).execute()
  text = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                 for o in cell.get("outputs", []))
  assert "mean NME over the clip" in text and "frames/s after the first" in text
  images = sum("image/png" in o.get("data", {}) for cell in notebook.cells
               if cell.cell_type == "code" for o in cell.get("outputs", []))
  assert images >= 4
