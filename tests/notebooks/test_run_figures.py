"""``scripts/run_figures.py``: which folders the notebook gets.

``--out-dir`` / ``--plot-dir`` win only when given; otherwise ``INFLUENCE_OUT_DIR`` /
``INFLUENCE_PLOT_DIR`` select the folders (as the README says), else ``<repo>/output``
and ``<repo>/plots``. The notebook itself is not executed here (see
``test_paper_figures.py``, which runs it through this script with the variables only).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_figures(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location("_run_figures_under_test", REPO_ROOT / "scripts" / "run_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def calls(run_figures, monkeypatch):
    """Replace the notebook execution by a record of its environment and plot folder."""
    seen = []

    def fake_run_notebook(env, plot_dir, timeout=1200, notebook=None):
        seen.append((env, Path(plot_dir)))
        return Path(plot_dir) / "paper-figures.executed.ipynb"

    monkeypatch.setattr(run_figures, "run_notebook", fake_run_notebook)
    return seen


def _folders(env):
    return Path(env["INFLUENCE_OUT_DIR"]), Path(env["INFLUENCE_PLOT_DIR"])


def test_environment_variables_select_the_folders_when_no_flag_is_given(run_figures, calls, monkeypatch, tmp_path):
    monkeypatch.setenv("INFLUENCE_OUT_DIR", str(tmp_path / "env_out"))
    monkeypatch.setenv("INFLUENCE_PLOT_DIR", str(tmp_path / "env_plots"))
    assert run_figures.main([]) == 0
    (env, plot_dir), = calls
    assert _folders(env) == (tmp_path / "env_out", tmp_path / "env_plots")
    assert plot_dir == tmp_path / "env_plots" and plot_dir.is_dir()


def test_flags_win_when_given(run_figures, calls, monkeypatch, tmp_path):
    monkeypatch.setenv("INFLUENCE_OUT_DIR", str(tmp_path / "env_out"))
    monkeypatch.setenv("INFLUENCE_PLOT_DIR", str(tmp_path / "env_plots"))
    assert run_figures.main(["--out-dir", str(tmp_path / "flag_out")]) == 0
    assert run_figures.main(["--plot-dir", str(tmp_path / "flag_plots")]) == 0
    (env1, plots1), (env2, plots2) = calls
    assert _folders(env1) == (tmp_path / "flag_out", tmp_path / "env_plots") and plots1 == tmp_path / "env_plots"
    assert _folders(env2) == (tmp_path / "env_out", tmp_path / "flag_plots") and plots2 == tmp_path / "flag_plots"
    assert os.environ["INFLUENCE_OUT_DIR"] == str(tmp_path / "env_out")   # this process's environment is kept


def test_repository_folders_without_flags_or_variables(run_figures, monkeypatch, tmp_path):
    monkeypatch.delenv("INFLUENCE_OUT_DIR", raising=False)
    monkeypatch.delenv("INFLUENCE_PLOT_DIR", raising=False)
    env = run_figures.notebook_environ()
    assert "INFLUENCE_OUT_DIR" not in env and "INFLUENCE_PLOT_DIR" not in env   # the notebook's defaults apply
    from experiments.figure_settings import settings_from_env
    s = settings_from_env(env, repo_root=tmp_path)   # (tmp_path stands for the repository: nothing is created there)
    assert (s.out_dir, s.plot_dir) == (tmp_path / "output", tmp_path / "plots")


def test_relative_folders_are_made_absolute_and_the_repository_leads_pythonpath(run_figures, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    env = run_figures.notebook_environ(plot_dir="p", environ={"INFLUENCE_OUT_DIR": "o", "INFLUENCE_FIG_DATA_DIR": "d",
                                                              "PYTHONPATH": os.pathsep.join(["/x", str(REPO_ROOT)])})
    # The kernel runs in notebooks/: relative paths are resolved against the caller's folder.
    assert (env["INFLUENCE_OUT_DIR"], env["INFLUENCE_PLOT_DIR"], env["INFLUENCE_FIG_DATA_DIR"]) == \
        (str(tmp_path / "o"), str(tmp_path / "p"), str(tmp_path / "d"))
    assert env["PYTHONPATH"].split(os.pathsep) == [str(REPO_ROOT), "/x"]
    assert env["MPLBACKEND"] == "Agg"


def test_a_bad_setting_exits_2_before_running(run_figures, calls, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INFLUENCE_FIG_NUM_SUBSETS", "many")
    assert run_figures.main(["--out-dir", "x"]) == 2
    assert not calls and "INFLUENCE_FIG_NUM_SUBSETS must be an integer" in capsys.readouterr().err


def _script(name):
    spec = importlib.util.spec_from_file_location(f"_{name}_under_test", REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_figures_ignores_only_the_pdf_creation_date(tmp_path, capsys):
    import datetime

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    compare = _script("compare_figures")
    folders = [tmp_path / "before", tmp_path / "after"]
    for i, d in enumerate(folders):
        d.mkdir()
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1])
        fig.savefig(d / "f.pdf", metadata={"CreationDate": datetime.datetime(2020, 1, 1 + i)})
        plt.close(fig)
        (d / "t.csv").write_text(",a\nx,0.5\n")
    assert (folders[0] / "f.pdf").read_bytes() != (folders[1] / "f.pdf").read_bytes()
    assert compare.main([str(f) for f in folders]) == 0
    assert "identical: 1 PDF files" in capsys.readouterr().out
    (folders[1] / "t.csv").write_text(",a\nx,0.50000001\n")
    (folders[1] / "g.csv").write_text("")
    assert compare.compare(*folders) == [f"only in {folders[1]}: g.csv", "differs: t.csv"]
    assert compare.main([str(folders[0]), str(tmp_path / "absent")]) == 2
