"""The CodaLab recipe and the Dockerfile stay consistent with the project."""
import re
import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_dry_run_prints_cl_commands():
    out = subprocess.run(["bash", "codalab/codalab_run.sh"], capture_output=True, text=True, cwd=REPO_ROOT,
                         env={"DRY_RUN": "1", "PATH": "/usr/bin:/bin"}, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert all(line.startswith("cl ") for line in lines)
    names = [re.search(r"-n (\S+)", line).group(1) for line in lines if line.startswith("cl run")]
    assert names[:5] == ["data-babble", "data-hospital", "data-mnist", "data-animals", "data-spam"]
    assert {"subsets-hospital", "reg-spam", "counterexamples", "data-valuation", "credit-assignment",
            "figures"} <= set(names)


def run_recipe(*args, **env):
    return subprocess.run(["bash", "codalab/codalab_run.sh", *args], capture_output=True, text=True, cwd=REPO_ROOT,
                          env={"PATH": "/usr/bin:/bin", **env}, timeout=60)


def images(stdout):
    return {m.group(1) for m in re.finditer(r"--request-docker-image (\S+)", stdout)}


def test_image_is_a_setting_flag_over_environment():
    out = run_recipe("--image", "docker.io/me/group-influence:1.0", DRY_RUN="1", INFLUENCE_IMAGE="ghcr.io/x/y:2")
    assert out.returncode == 0 and out.stderr == ""
    assert images(out.stdout) == {"docker.io/me/group-influence:1.0"}
    out = run_recipe("--image=ghcr.io/me/gi:3", DRY_RUN="1")
    assert images(out.stdout) == {"ghcr.io/me/gi:3"}
    out = run_recipe(DRY_RUN="1", INFLUENCE_IMAGE="ghcr.io/x/y:2")
    assert out.returncode == 0 and images(out.stdout) == {"ghcr.io/x/y:2"}


def test_the_local_default_image_is_refused_for_a_real_run_and_noted_in_a_dry_run():
    out = run_recipe(DRY_RUN="1")
    assert out.returncode == 0 and images(out.stdout) == {"group-influence:latest"}
    assert out.stderr.startswith("note: docker image 'group-influence:latest' is a local name that CodaLab "
                                 "workers cannot pull")
    out = run_recipe(DRY_RUN="0")  # refused before any `cl` command (cl is not even installed here)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("error: docker image 'group-influence:latest' is a local name")
    assert "docker push" in out.stderr and "--image" in out.stderr and "INFLUENCE_IMAGE" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_bad_recipe_arguments_exit_2_in_one_line():
    for args in (["--bogus"], ["--image"], ["--image", ""]):
        out = run_recipe(*args, DRY_RUN="1")
        assert out.returncode == 2 and out.stdout == "" and len(out.stderr.strip().splitlines()) == 1, args
    out = run_recipe("--help")
    assert out.returncode == 0 and "docker build -t group-influence ." in out.stdout


def test_every_referenced_script_and_flag_exists():
    out = subprocess.run([sys.executable, "codalab/check_recipe.py"], capture_output=True, text=True, cwd=REPO_ROOT,
                         timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "recipe OK" in out.stdout


def test_checker_detects_a_bad_flag(tmp_path, monkeypatch):
    import importlib.util
    spec = importlib.util.spec_from_file_location("check_recipe", REPO_ROOT / "codalab" / "check_recipe.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    (tmp_path / "bad.sh").write_text("python scripts/subsets_infl_logreg.py --dataset-id x --no-such-flag\n"
                                     "bash codalab/missing.sh\n")
    monkeypatch.setattr(mod, "CODALAB", tmp_path)
    problems = mod.check()
    assert any("--no-such-flag" in p for p in problems)
    assert any("missing.sh" in p for p in problems)


def test_dockerfile_installs_the_readme_requirements():
    docker = (REPO_ROOT / "Dockerfile").read_text()
    setup = (REPO_ROOT / "scripts" / "setup_env.sh").read_text()
    assert re.search(r"^FROM python:3\.11", docker, re.M)
    assert "COPY requirements.txt" in docker and "pip install --no-cache-dir -r requirements.txt" in docker
    assert "pip install --quiet -r requirements.txt" in setup and "(3, 11)" in setup
    # Every requirement is pinned exactly, so both installs resolve to the same versions.
    reqs = [r for r in (REPO_ROOT / "requirements.txt").read_text().splitlines() if r and not r.startswith("#")]
    assert reqs and all("==" in r for r in reqs)
