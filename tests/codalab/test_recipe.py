"""The CodaLab recipe and the Dockerfile stay consistent with the project."""
import re
import shlex
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
    assert re.search(r"^FROM python:3\.11", docker, re.MULTILINE)
    assert "COPY requirements.txt" in docker and "pip install --no-cache-dir -r requirements.txt" in docker
    assert "pip install --quiet -r requirements.txt" in setup and "(3, 11)" in setup
    # Every requirement is pinned exactly, so both installs resolve to the same versions.
    reqs = [r for r in (REPO_ROOT / "requirements.txt").read_text().splitlines() if r and not r.startswith("#")]
    assert reqs and all("==" in r for r in reqs)


def recipe_bundles(stdout):
    """(created, dependencies): the bundle names the dry run creates (``cl upload`` and
    ``cl run -n``, in order) and, per ``cl run``, its ``key:target`` dependencies."""
    created, deps = [], {}
    for line in stdout.splitlines():
        words = shlex.split(line)
        if words[:2] == ["cl", "upload"]:
            created += words[2:]
        elif words[:2] == ["cl", "run"]:
            name = words[words.index("-n") + 1]
            rest = words[words.index("-n") + 2:]
            command = next(i for i, w in enumerate(rest) if " " in w)  # the quoted command
            deps[name] = [w.split(":", 1) for w in rest[:command]]
            created.append(name)
    return created, deps


def test_every_bundle_the_recipe_uses_is_created_by_it_or_documented():
    out = run_recipe("--image", "docker.io/me/group-influence:1.0", DRY_RUN="1")
    assert out.returncode == 0, out.stderr
    created, deps = recipe_bundles(out.stdout)
    assert created[:6] == ["datasets", "experiments", "influence", "scripts", "codalab", "notebooks"]
    documented = (REPO_ROOT / "docs" / "codalab.md").read_text()
    external = []
    for name, pairs in deps.items():
        for key, target in pairs:
            if re.fullmatch(r"0x[0-9a-f]{32}", target):
                external.append(target)
                assert target in documented, f"{name}: bundle {target} is not documented in docs/codalab.md"
            else:
                # a bundle made earlier by the recipe itself, mounted under its own name
                assert target in created[:created.index(name)], f"{name} depends on {target}, never created before it"
                assert key in ("", target), (name, key, target)
    # The one external bundle: the pre-processed MultiNLI features, mounted as data-mnli.
    assert external == ["0x5258e3771b974983abfb10bfa75e207d"]
    assert ["data-mnli", "0x5258e3771b974983abfb10bfa75e207d"] in deps["credit-assignment"]
    # link_data.sh links that mount as data/multinli_1.0, the folder the mnli loader reads.
    assert "data-mnli" in (REPO_ROOT / "codalab" / "link_data.sh").read_text()
    # The bundle can be replaced by one's own upload of the same files.
    out = run_recipe("--image", "docker.io/me/group-influence:1.0", DRY_RUN="1", INFLUENCE_MNLI_BUNDLE="my-mnli")
    assert recipe_bundles(out.stdout)[1]["credit-assignment"][-1] == ["data-mnli", "my-mnli"]


def test_recipe_points_only_at_files_in_the_repository():
    text = (REPO_ROOT / "codalab" / "codalab_run.sh").read_text()
    for ref in re.findall(r"\b((?:docs|codalab|scripts)/[\w./-]+\.(?:md|sh|py))", text):
        assert (REPO_ROOT / ref).is_file(), ref
    assert "README" not in text and "spec" not in text


def test_docker_build_context_and_worker_imports():
    ignore = {r.strip().rstrip("/") for r in (REPO_ROOT / ".dockerignore").read_text().splitlines()
              if r.strip() and not r.startswith("#")}
    assert {".git", ".venv", "data", "output", "plots", "**/__pycache__", ".pytest_cache"} <= ignore
    docker = (REPO_ROOT / "Dockerfile").read_text()
    workdir = re.search(r"^WORKDIR (\S+)", docker, re.MULTILINE).group(1)
    # `dask worker` runs from any folder: the packages must be importable through PYTHONPATH.
    assert re.search(rf"^ENV .*PYTHONPATH={re.escape(workdir)}(\s|$)", docker, re.MULTILINE)
