"""The student's paper-profile page quotes lab.budget's estimates (memory, the fit decision, hours, disk, the
minimum viable run); each quote names the command that printed it, and must be exactly what it prints today.
Around the quotes, the sections they belong to state no figure of their own."""
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO

PAGE = REPO / "course" / "paper_profile.md"
QUOTE = re.compile(r"<!-- printed by: (python [^>]*?) -->\n(.*?)\n<!-- end -->", flags=re.S)
OWN = (("## 4. First, the smoke run", "## 5. Notebooks"), ("## 6. What to expect", "## 7. When a file"))


def _printed(command: str) -> str:
    done = subprocess.run([sys.executable, *command.split()[1:]], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def _quotes() -> list[tuple[str, str]]:
    return QUOTE.findall(PAGE.read_text())


def test_the_page_quotes_the_estimates_it_must():
    commands = [c for c, _ in _quotes()]
    for flag in ("--minimum", "--fits", "--notebooks", "--method bhra", "--method full"):
        assert any(c.endswith(flag) for c in commands), flag


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for c, _ in QUOTE.findall(PAGE.read_text())])
def test_every_quote_is_what_its_command_prints(command):
    quoted = dict(_quotes())[command]
    quoted = re.sub(r"^```text\n|\n```$", "", quoted.strip())
    assert quoted.strip() == _printed(command), f"re-run `{command}` and paste its output"


def test_no_figure_outside_the_quotes():
    page = PAGE.read_text()
    for start, end in OWN:
        prose = QUOTE.sub("", page[page.index(start):page.index(end)])
        figures = re.findall(r"\d[\d,.]*\s*(?:GiB|GB|MiB|h\b|hours|TFLOPS|%|x\b)", prose)
        assert not figures, f"{start}: {figures} (print them from lab.budget and quote the output)"
