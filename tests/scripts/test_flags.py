"""One flag vocabulary across ``scripts/``: every option documented (help text, default),
``--debug`` and ``--progress`` on every script, the same names for the same things (with
the earlier spellings as aliases), and flags that would do nothing refused with a message.

The help is read as a user reads it (``format_help()`` of each script's parser, and one
real ``--help`` per script in a subprocess for the entry point).
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

SCRIPTS = REPO_ROOT / "scripts"
NAMES = sorted(p.stem for p in SCRIPTS.glob("*.py") if not p.stem.startswith("_"))
# The original's flag names (kept), per script: never renamed.
ORIGINAL_FLAGS = {
    "subsets_infl_logreg": ["--data-dir", "--out-dir", "--max-memory", "--force-refresh", "--no-intermediate-results",
                            "--invalidate", "--worker", "--dataset-id", "--subset-seed", "--subset-choice-type",
                            "--skip-hessian-spectrum", "--fixed-reg", "--tag", "--subset-rel-size", "--num-subsets",
                            "--subset-min-rel-size", "--subset-max-rel-size", "--inverse-hvp-method",
                            "--inverse-vp-method"],
    "counterexamples": ["--out-dir", "--force-refresh", "--no-intermediate-results", "--invalidate", "--worker",
                        "--dataset-id", "--subset-seed"],
    "credit_assignment": ["--data-dir", "--out-dir", "--max-memory", "--force-refresh", "--invalidate", "--worker",
                          "--no-intermediate-results", "--dataset-id", "--inverse-hvp-method", "--inverse-vp-method"],
    "data_valuation": ["--data-dir", "--out-dir", "--max-memory", "--force-refresh", "--invalidate", "--dataset-id",
                       "--sample-weights"],
    "babble_reduce": ["--data-dir", "--out-dir", "--save-reduced-dir", "--force-refresh", "--invalidate",
                      "--dataset-id", "--fit-intercept", "--sample-weights"],
    "load_all_datasets": ["--data-dir", "--center-data", "--append-bias", "--dataset-ids", "--supplement-ids"],
}
OPTION = re.compile(r"^  (-{1,2}\w[\w-]*)")


def load(name):
    sys.path.insert(0, str(SCRIPTS))
    try:
        spec = importlib.util.spec_from_file_location(f"_flags_{name}", SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while it runs
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPTS))
    return module


def parsers(name):
    """The script's parser and ``[(name, help text)]`` of it and, for a script with
    subcommands, of each subcommand (its ``{subcommand} --help``)."""
    p = load(name).make_parser()
    found = [(name, p.format_help())]
    subs = re.search(r"^  \{([\w,]+)\}", p.format_help(), re.M)
    for sub in subs.group(1).split(",") if subs else []:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
            p.parse_args([sub, "--help"])
        found.append((f"{name} {sub}", buf.getvalue()))
    return p, found


def options(help_text: str) -> dict[str, tuple[str, str]]:
    """``{first flag: (invocation, help text)}`` of each option in an argparse help."""
    out, current = {}, None
    body = help_text.split("\noptions:\n", 1)[1]
    for line in body.splitlines():
        m = OPTION.match(line)
        if m:
            invocation, _, text = line.strip().partition("  ")
            current = m.group(1)
            out[current] = (invocation, text.strip())
        elif current and line.startswith("   ") and line.strip():
            invocation, text = out[current]
            out[current] = (invocation, f"{text} {line.strip()}".strip())
        elif not line.strip():
            current = None
    return out


def test_the_help_parser_sees_a_missing_help_and_a_missing_default():
    import argparse

    p = argparse.ArgumentParser(prog="x", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--with-help", type=int, default=3, help="a number (default: 3)")
    p.add_argument("--no-help", type=int, default=3)
    p.add_argument("--switch", action="store_true", help="a switch")
    found = options(p.format_help())
    assert found["--with-help"] == ("--with-help WITH_HELP", "a number (default: 3)")
    assert found["--no-help"] == ("--no-help NO_HELP", "")
    assert found["--switch"] == ("--switch", "a switch")


@pytest.mark.parametrize("name", NAMES)
def test_every_option_has_help_and_every_value_a_default(name):
    _, found = parsers(name)
    texts = [text for _, text in found]
    assert len(texts) == (3 if name == "compare_reference" else 1)
    for text in texts:
        opts = options(text)
        assert "--debug" in opts and "--progress" in opts, name
        assert "{auto,bar,log,off}" in opts["--progress"][0]
        for flag, (invocation, help_text) in opts.items():
            assert help_text, f"{name}: {flag} has no help text"
            takes_value = len(invocation.split(",")[0].split()) > 1
            if takes_value and flag not in ("-h",):
                assert any(w in help_text.lower() for w in ("default", "(required)", "not used here")), \
                    f"{name}: {flag} does not state its default: {help_text!r}"
    # Positional arguments are documented too.
    positional = texts[0].split("\npositional arguments:\n", 1)
    if len(positional) == 2:
        for line in positional[1].split("\n\n", 1)[0].splitlines():
            if line.startswith("  ") and not line.startswith("   "):
                assert len(line.strip().split(None, 1)) == 2 or line.strip().startswith("{"), line


@pytest.mark.parametrize("name", sorted(ORIGINAL_FLAGS))
def test_the_originals_flag_names_are_kept(name):
    help_text = load(name).make_parser().format_help()
    opts = options(help_text)
    invocations = " ".join(inv for inv, _ in opts.values())
    for flag in ORIGINAL_FLAGS[name]:
        assert re.search(rf"(^|[ ,]){re.escape(flag)}([ ,]|$)", invocations), f"{name}: {flag} is gone"


def test_the_same_names_on_every_script():
    """Dask workers are --num-workers (alias --workers), groups --num-subsets (alias
    --num-groups), lambda/n --fixed-reg, a dataset --dataset-id, plots --plots/--no-plots."""
    seen = {}
    for name in NAMES:
        _, found = parsers(name)
        for flag, (invocation, _) in options(found[0][1]).items():
            for alias in re.findall(r"--[\w-]+", invocation):
                seen.setdefault(alias, set()).add(flag)
    # Each alias names one thing: it always comes with the same first flag.
    for alias, firsts in seen.items():
        assert len(firsts) == 1, f"{alias} is spelled as {firsts}"
    assert seen["--workers"] == {"--num-workers"} and seen["--num-groups"] == {"--num-subsets"}
    assert seen["--workload"] == {"--dataset-id"} and seen["--datasets"] == {"--dataset-ids"}
    assert seen["--l2-reg-per-n"] == {"--fixed-reg"} and "--l2-reg" not in seen
    assert seen["--no-plots"] == {"--plots"}


def test_aliases_parse_to_the_same_settings():
    ss = load("subsets_infl_logreg").make_parser()
    a = ss.parse_args(["--num-workers", "3", "--num-subsets", "7", "--no-plots"])
    b = ss.parse_args(["--workers", "3", "--num-groups", "7", "--no-plots"])
    assert (a.workers, a.num_subsets, a.plots) == (b.workers, b.num_subsets, b.plots) == (3, 7, False)
    assert ss.parse_args([]).plots is None  # the summary figure only
    assert load("data_valuation").make_parser().parse_args([]).plots is False
    rep = load("reproduce").make_parser()
    assert rep.parse_args(["--datasets", "digits"]).datasets == rep.parse_args(["--dataset-ids", "digits"]).datasets
    assert rep.parse_args(["--skip-figures"]).skip == ["figures"]
    assert ss.parse_args(["--no-progress"]).progress == "off" and ss.parse_args([]).progress == "auto"


@pytest.mark.parametrize("name, argv, flag", [
    ("counterexamples", ["--max-memory", "100000000"], "--max-memory"),
    ("babble_reduce", ["--max-memory", "100000000"], "--max-memory"),
    ("credit_assignment", ["--grad-batch-size", "400"], "--grad-batch-size"),
    ("credit_assignment", ["--hessian-batch-size", "30"], "--hessian-batch-size"),
])
def test_flags_that_do_nothing_are_refused_in_one_line(name, argv, flag, capsys):
    module = load(name)
    assert module.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{flag} is not used by this script" in err[0]
    # Left out, the config still records the original's value.
    assert module.make_parser().parse_args([]).max_memory == int(1e9)


def test_bad_progress_mode_is_a_usage_error(capsys):
    assert load("quickstart").main(["--progress", "loud"]) == 2
    assert "invalid choice: 'loud'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["quickstart", "benchmark_dask", "compare_figures", "run_figures"])
def test_help_runs_as_a_command(name):
    out = subprocess.run([sys.executable, str(SCRIPTS / f"{name}.py"), "--help"], capture_output=True, text=True,
                         timeout=300, cwd=REPO_ROOT)
    assert out.returncode == 0 and "--debug" in out.stdout and "--progress" in out.stdout, out.stderr
