"""The notebooks run top to bottom on the tiny run with parameters injected as papermill injects
them, draw non-trivial pictures, and are committed without outputs."""

import os
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pytest
from matplotlib.image import imread

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def parameters_cell(notebook: nbformat.NotebookNode) -> int:
    return next(index for index, cell in enumerate(notebook.cells)
                if "parameters" in cell.metadata.get("tags", []))


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory):
    """A python3 kernelspec of this very interpreter, so that the kernel imports the crl under
    test whatever python3 kernel the machine (or its user) has installed."""
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client.kernelspec import KernelSpecManager

    directory = tmp_path_factory.mktemp("kernels")
    write_kernel_spec(directory / "python3")  # argv: sys.executable -m ipykernel_launcher
    return KernelSpecManager(kernel_dirs=[str(directory)])


def execute(name: str, parameters: dict, kernel_specs, compile_cache: str,
            cwd: Path) -> nbformat.NotebookNode:
    """Run a copy of notebook ``name`` with a cell after its parameters cell that overrides
    them (as papermill does), in a headless kernel started in ``cwd``."""
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    overrides = "\n".join(f"{key} = {value!r}" for key, value in parameters.items())
    notebook.cells.insert(parameters_cell(notebook) + 1, nbformat.v4.new_code_cell(
        overrides, metadata={"tags": ["injected-parameters"]}))
    kernel = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=kernel_specs)
    env = {**os.environ, "MPLBACKEND": "Agg", "JAX_COMPILATION_CACHE_DIR": compile_cache,
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5"}
    NotebookClient(notebook, km=kernel, timeout=300,
                   resources={"metadata": {"path": str(cwd)}}).execute(env=env)
    return notebook


def assert_picture(file: Path) -> None:
    pixels = imread(file)
    assert pixels.std() > 0
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 16


def shown_images(notebook: nbformat.NotebookNode) -> int:
    return sum("image/png" in output.get("data", {}) for cell in notebook.cells
               if cell.cell_type == "code" for output in cell.outputs)


def test_the_q_values_notebook_draws_each_run_and_the_comparison_next_to_the_runs(
        tiny_run, baseline_runs, kernel_specs, compile_cache, tmp_path):
    """A contrastive critic (Q and representation distance) and SAC's (Q alone) side by side."""
    run_dirs = [shutil.copytree(run, tmp_path / name) for name, run in (
        ("tiny_crl", tiny_run[3]), ("tiny_sac_her", baseline_runs("sac_her")[3]))]
    notebook = execute("q_values.ipynb",
                       {"run_dirs": [str(run_dir) for run_dir in run_dirs],
                        "points_per_cell": 4, "best_of": 2},
                       kernel_specs, compile_cache, tmp_path)
    goal = "goal_3_1"  # the default goal of u_maze
    for run_dir in run_dirs:
        assert_picture(run_dir / "render" / f"q_values_{run_dir.name}_{goal}.png")
    assert_picture(run_dirs[0] / "render" / f"q_values_compared_{goal}.png")
    assert shown_images(notebook) == 3


def test_the_training_curves_notebook_draws_the_runs_curves(tiny_run, kernel_specs,
                                                           compile_cache, tmp_path):
    notebook = execute("training_curves.ipynb",
                       {"run_dirs": [str(tiny_run[3])], "output_dir": str(tmp_path / "out")},
                       kernel_specs, compile_cache, tmp_path)
    assert_picture(tmp_path / "out" / "training_curves.png")
    assert shown_images(notebook) == 1


def test_the_depth_health_notebook_draws_block_heatmaps_and_ranks_of_two_agents(
        tiny_run, baseline_runs, kernel_specs, compile_cache, tmp_path):
    run_dirs = [str(tiny_run[3]), str(baseline_runs("sac_her")[3])]
    notebook = execute("depth_health.ipynb",
                       {"run_dirs": run_dirs, "network": "actor",
                        "output_dir": str(tmp_path / "out")},
                       kernel_specs, compile_cache, tmp_path)
    assert_picture(tmp_path / "out" / "block_health.png")
    assert_picture(tmp_path / "out" / "representation_rank.png")
    assert shown_images(notebook) == 2


@pytest.mark.parametrize("name", ["q_values.ipynb", "training_curves.ipynb",
                                  "depth_health.ipynb"])
def test_committed_notebooks_have_no_outputs_and_open_with_a_parameters_cell(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code[0].metadata.get("tags") == ["parameters"]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
