"""The tutorial notebooks: each runs top to bottom, the committed files carry no outputs, and
each ``.ipynb`` holds exactly the cells of its source, the paired jupytext ``.py`` file.

Every notebook is executed with nbclient in a kernel of the interpreter running the tests: a
kernelspec written to a temporary folder (on ``JUPYTER_PATH``) points at ``sys.executable``, so
neither a user-level ``python3`` kernel nor another environment's can be picked up. The kernel
runs with ``CONFORMER_XAI_FAST=1`` (the notebooks' quick settings) and one BLAS thread, since it
shares the CPU with pytest-xdist's other worker. The timeout per cell only catches hangs.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
EXPECTED = (
    "01_feature_maps",
    "02_gradcam_branches",
    "03_attention_rollout",
    "04_branch_comparison",
    "05_your_own_checkpoint",
    "06_spectrogram_conformer",
    "07_branch_flow",
)
NOTEBOOKS = [NOTEBOOK_DIR / f"{name}.ipynb" for name in EXPECTED]
RESYNC = ("edit the .py file (the source) and run `make notebooks-sync` "
          "(jupytext --sync notebooks/*.py)")
KERNEL_NAME = "conformer-xai-tests"
# A hang guard, not a speed test: the quick notebooks take at most 25 s each, whole. It also
# bounds a rare stall seen once in a full run: the client missed the zmq wakeup of a reply that
# had arrived, and nbclient picked it up only when the cell's poll timed out (then 600 s).
CELL_TIMEOUT_S = 120
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: Figures each notebook draws at least (in its quick run).
MIN_FIGURES = {"01_feature_maps": 2, "02_gradcam_branches": 11, "03_attention_rollout": 8,
               "04_branch_comparison": 5, "05_your_own_checkpoint": 6,
               "06_spectrogram_conformer": 1, "07_branch_flow": 6}


def _ids(path: Path) -> str:
    return path.stem


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _cells(nb: nbformat.NotebookNode) -> list[tuple[str, str, list[str]]]:
    """What pairing keeps equal: each cell's type, source and tags."""
    return [(c.cell_type, c.source, list(c.metadata.get("tags", []))) for c in nb.cells]


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """A kernelspec for this interpreter, on JUPYTER_PATH, with the notebooks' quick settings."""
    root = tmp_path_factory.mktemp("jupyter")
    spec_dir = root / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "conformer-xai tests",
        "language": "python",
    }))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(root))
        mp.setenv("CONFORMER_XAI_FAST", "1")
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.delenv("MPLBACKEND", raising=False)  # the notebooks use the inline backend
        yield KERNEL_NAME


def test_the_notebooks_are_committed():
    found = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))
    assert found == list(EXPECTED)
    sources = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.py"))
    assert sources == list(EXPECTED), "one jupytext .py source per notebook, nothing else"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_committed_notebook_has_no_outputs(path):
    nb = _read(path)
    nbformat.validate(nb)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert code_cells
    for i, cell in enumerate(code_cells):
        assert cell.outputs == [], f"{path.name}: code cell {i} has outputs; clear them"
        assert cell.execution_count is None, f"{path.name}: code cell {i} has an execution count"
    assert "widgets" not in nb.metadata, f"{path.name}: saved widget state in the metadata"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_starts_with_a_parameters_cell(path):
    code_cells = [c for c in _read(path).cells if c.cell_type == "code"]
    first = code_cells[0]
    assert "parameters" in first.metadata.get("tags", [])
    assert "DEVICE = \"cpu\"" in first.source
    if path.stem == "05_your_own_checkpoint":
        assert 'BASE_WEIGHTS = "embedded"' in first.source
    elif path.stem == "06_spectrogram_conformer":
        assert "CHECKPOINT = None" in first.source and "WAV = None" in first.source
    else:
        assert 'MODEL_WEIGHTS = "embedded"' in first.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_is_in_sync_with_its_py_source(path):
    source = path.with_suffix(".py")
    text = jupytext.read(source)
    committed = _read(path)
    assert committed.metadata.get("jupytext", {}).get("formats") == "ipynb,py:percent", (
        f"{path.name} is not paired with {source.name}: run jupytext --set-formats "
        f"ipynb,py:percent {path}")
    assert text.metadata.get("kernelspec") == committed.metadata.get("kernelspec")
    ours, theirs = _cells(text), _cells(committed)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a == b, f"{path.name} cell {i} differs from {source.name}: {RESYNC}"
    assert len(ours) == len(theirs), (
        f"{path.name} has {len(theirs)} cells, {source.name} {len(ours)}: {RESYNC}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_runs_top_to_bottom(path, kernel):
    nb = _read(path)
    client = NotebookClient(nb, kernel_name=kernel, timeout=CELL_TIMEOUT_S,
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    # The kernel must not inherit this process's stdout: under pytest-xdist that is the
    # worker's channel to the controller, and a kernel writing to it hangs the run.
    client.execute(stdout=subprocess.DEVNULL, stderr=sys.stderr)  # raises on any cell error

    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code_cells] == list(range(1, len(code_cells) + 1))
    outputs = [o for c in code_cells for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pngs = [base64.b64decode(o.data["image/png"]) for o in outputs
            if "image/png" in o.get("data", {})]
    assert len(pngs) >= MIN_FIGURES[path.stem], f"{path.name}: only {len(pngs)} figures"
    assert all(p.startswith(PNG_MAGIC) and len(p) > 5000 for p in pngs)
    if path.stem == "02_gradcam_branches":  # the explorer: widgets, and its view drawn directly
        kinds = [set(o.get("data", {})) for o in code_cells[-2].outputs]
        assert any("application/vnd.jupyter.widget-view+json" in k for k in kinds)
        assert any("image/png" in k for k in (set(o.get("data", {}))
                                              for o in code_cells[-1].outputs))
