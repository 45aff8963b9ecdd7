"""The README and docs/: short README, links that resolve inside the repository, the section
titles that code comments cite, no reference to files a user does not have."""
import re

import pytest

from tests.conftest import REPO_ROOT

DOCS = sorted((REPO_ROOT / "docs").glob("*.md"))
FILES = [REPO_ROOT / "README.md", *DOCS]
DESIGN_SECTIONS = [
    "Objective and conventions", "Result keys", "Group types", "Phases of ss_logreg", "Run ids and configs",
    "Certified fits and refits", "Where this suite differs from the original", "Datasets and preprocessing",
    "Randomness", "Parallel execution", "Storage format",
]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path):
    text = FENCE.sub("", path.read_text())
    return {slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def links(path):
    return LINK.findall(FENCE.sub("", path.read_text()))


def test_slug_follows_github():
    assert slug("Main job (`scripts/quickstart.sh`)") == "main-job-scriptsquickstartsh"
    assert slug("Beyond the paper: an accuracy ladder of estimators") == \
        "beyond-the-paper-an-accuracy-ladder-of-estimators"
    assert slug("Phases of ss_logreg") == "phases-of-ss_logreg"


def test_readme_is_short_and_opens_with_the_two_commands():
    text = (REPO_ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    first_block = re.search(r"```bash\n(.*?)```", text, re.DOTALL)
    # Nothing but the title before the first command block.
    assert text[:first_block.start()].strip().startswith("# ") and text[:first_block.start()].count("\n") <= 2
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines() if line.strip()]
    assert commands == ["bash scripts/quickstart.sh", "bash scripts/run_tests.sh"]
    for script in ("scripts/quickstart.sh", "scripts/run_tests.sh"):
        assert (REPO_ROOT / script).is_file()


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_link_resolves_inside_the_repository(path):
    found = links(path)
    assert found or path.name != "README.md"
    for target in found:
        if re.match(r"https?://", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        assert dest.is_relative_to(REPO_ROOT), f"{path.name}: {target} points outside the repository"
        assert dest.exists(), f"{path.name}: {target} does not exist"
        if anchor:
            assert anchor in anchors(dest), f"{path.name}: {target}: no heading with anchor #{anchor} in {dest.name}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_reference_to_files_users_do_not_have(path):
    text = path.read_text()
    for pattern in (r"\.\./shared", r"STYLE\.md", r"\bthe spec\b", r"\bspec\b.*§", r"\bissue \d+",
                    r"README decision"):
        assert not re.search(pattern, text, re.IGNORECASE), f"{path.name} matches {pattern!r}"
    # Every Markdown file named exists (in the repository root, docs/, or at the path given).
    for name in re.findall(r"[\w./-]*\b[\w-]+\.md\b", text):
        assert any((base / name).exists() for base in (REPO_ROOT, REPO_ROOT / "docs", path.parent)), \
            f"{path.name} names {name}, which is not in the repository"
    # Every docs/... or scripts/... path named in the text exists.
    for ref in re.findall(r"(?<![\w./-])((?:docs|scripts|codalab|experiments|datasets|influence|tests|notebooks)"
                          r"/[\w./-]*\.(?:md|py|sh|ipynb))", text):
        assert (REPO_ROOT / ref).exists(), f"{path.name} names {ref}, which does not exist"


def test_design_has_the_cited_sections_in_order():
    text = FENCE.sub("", (REPO_ROOT / "docs" / "design.md").read_text())
    assert re.findall(r"^## (.+)$", text, re.MULTILINE) == DESIGN_SECTIONS


def test_performance_keeps_a_section_for_notes_moved_from_code():
    assert "notes-moved-from-code-comments" in anchors(REPO_ROOT / "docs" / "performance.md")


def test_the_checker_fails_on_a_broken_link(tmp_path, monkeypatch):
    page = REPO_ROOT / "docs" / "design.md"
    assert "no-such-section" not in anchors(page)
    bad = tmp_path / "bad.md"
    bad.write_text("[a](design.md#no-such-section) [b](missing.md)\n```\n[c](ignored.md)\n```\n")
    assert links(bad) == ["design.md#no-such-section", "missing.md"]
