"""Check the CodaLab recipe: every referenced script exists and accepts every flag used.

    python codalab/check_recipe.py        # exit 0 when consistent, 1 with a list of problems

Reads ``codalab/*.sh``, joins continued lines, finds each ``python scripts/NAME.py ...``
and ``bash codalab/NAME.sh`` reference, and checks the script exists and that every
``--flag`` appears in the script's ``--help`` output.
"""
import functools
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CODALAB = REPO_ROOT / "codalab"


@functools.cache
def script_flags(script: Path) -> set[str]:
    """The ``--flags`` in ``script --help`` (run once per script)."""
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True,
                         cwd=REPO_ROOT, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"{script.name} --help failed: {out.stderr[-500:]}")
    return set(re.findall(r"--[a-z0-9][a-z0-9-]*", out.stdout))


def check() -> list[str]:
    problems = []
    for sh in sorted(CODALAB.glob("*.sh")):
        text = sh.read_text().replace("\\\n", " ")
        for ref in re.findall(r"bash codalab/([\w.-]+\.sh)", text):
            if not (CODALAB / ref).is_file():
                problems.append(f"{sh.name}: references missing codalab/{ref}")
        for line in text.splitlines():
            for m in re.finditer(r"python (scripts/[\w.-]+\.py)([^;&|\"]*)", line):
                script = REPO_ROOT / m.group(1)
                if not script.is_file():
                    problems.append(f"{sh.name}: references missing {m.group(1)}")
                    continue
                flags = set(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", m.group(2)))
                missing = flags - script_flags(script)
                if missing:
                    problems.append(f"{sh.name}: {m.group(1)} does not accept {sorted(missing)}")
    return problems


def main():
    problems = check()
    for p in problems:
        print(p)
    print("recipe OK" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
