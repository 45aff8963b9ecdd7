"""The CLI skeleton: exit codes, one-line messages, --debug (experiments/cli.py)."""
import numpy as np
import pytest

from datasets.common import DatasetIntegrityError
from datasets.download import DataUnavailableError
from datasets.storage import CorruptFileError
from experiments import cli
from experiments.common import ConfigError, ConfigFileError, OutputDirError


def make(body, *flags):
    p = cli.ArgumentParser("test script")
    p.add_argument("--n", type=int, default=1)
    for flag in flags:
        p.add_argument(flag, action="store_true")
    return lambda argv: cli.run_cli(p, body, argv, configure=False)


def raising(exc):
    def body(args):
        raise exc
    return body


@pytest.mark.parametrize("exc", [ConfigError("--n must be >= 2; got 1"), ConfigFileError("x/config.json is damaged"),
                                 OutputDirError("cannot create"), CorruptFileError("d/c.npz", "truncated"),
                                 DataUnavailableError("no archive at d/x.zip\nURL 1 failed\nURL 2 failed"),
                                 DatasetIntegrityError("spam: x has NaN at row 3")])
def test_user_errors_exit_2_with_one_line(exc, capsys):
    assert make(raising(exc))([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert str(exc).splitlines()[0] in err
    assert ("more with --debug" in err) == ("\n" in str(exc))


def test_unexpected_failure_exits_1_traceback_only_with_debug(capsys):
    main = make(raising(ZeroDivisionError("division by zero")))
    assert main([]) == 1
    err = capsys.readouterr().err
    assert err == ("error: unexpected failure: ZeroDivisionError: division by zero "
                   "(rerun with --debug for the traceback)\n")
    assert main(["--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.rstrip().endswith("division by zero")


def test_usage_errors_are_one_line_and_help_exits_0(capsys):
    main = make(lambda args: 0)
    assert main(["--n", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --n: invalid int value: 'x'" in err and "see --help" in err
    assert main(["--help"]) == 0
    assert "--debug" in capsys.readouterr().out


def test_body_exit_codes_and_interrupt(capsys):
    assert make(lambda args: None)([]) == 0
    assert make(lambda args: args.n)(["--n", "3"]) == 3
    assert make(raising(KeyboardInterrupt()))([]) == 130


def test_certificate_exit_code(caplog):
    ratio, code = cli.certificate({"subset_refit_grad_norm": np.array([1e-9, 5e-9]),
                                   "subset_refit_grad_tol": np.array([1e-8, 1e-8])})
    assert code == cli.EXIT_OK and np.allclose(ratio, [0.1, 0.5])
    _, code = cli.certificate({"subset_refit_grad_norm": np.array([1e-9, 2e-8]),
                               "subset_refit_grad_tol": np.array([1e-8, 1e-8])})
    assert code == cli.EXIT_UNCERTIFIED == 3
    assert "1 of 2 exact refits are not certified" in caplog.text
    _, code = cli.certificate({"subset_refit_grad_norm": np.array([np.nan]), "subset_refit_grad_tol": np.array([1.0])})
    assert code == 3  # NaN is never certified


def test_uncertified_refit_makes_the_script_exit_3(monkeypatch, capsys):
    import importlib.util
    import sys
    from pathlib import Path

    from experiments.common import Experiment

    scripts = Path(__file__).resolve().parents[2] / "scripts"
    sys.path.insert(0, str(scripts))
    try:
        spec = importlib.util.spec_from_file_location("cex_exit3", scripts / "counterexamples.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(scripts))

    def fake_run(self, *args, **kwargs):
        self.R = {"subset_indices": [np.arange(2)] * 2, "cex_tags": ["a"],
                  "subset_refit_grad_norm": np.array([1.0, 1e-12]), "subset_refit_grad_tol": np.array([1e-8, 1e-8])}
        return self.R

    monkeypatch.setattr(Experiment, "run_from_cli", fake_run)
    assert module.main(["--dataset-id", "fixed"]) == 3
    assert "1/2 certified" in capsys.readouterr().out


def test_worker_flag_keeps_the_original_behaviour(capsys):
    p = cli.ArgumentParser("test")
    cli.add_run_flags(p)
    called = []
    assert cli.run_cli(p, lambda args: called.append(1), ["--worker"], configure=False) == 0
    assert called == [] and "task queue was replaced" in capsys.readouterr().out
    args = p.parse_args([])
    assert (args.max_memory, args.out_dir, args.data_dir, args.invalidate) == (int(1e9), None, None, None)
    assert not (args.force_refresh or args.no_intermediate_results or args.worker or args.debug)
