"""The student's paper-profile page quotes the memory and disk estimate; the estimate is code
(`benchmarks/bench.py --estimate`), so the quote must be exactly what it prints today."""
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO
PAGE = REPO / "course" / "paper_profile.md"


def _estimate(*args: str) -> str:
    done = subprocess.run([sys.executable, "benchmarks/bench.py", "--estimate", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_the_page_quotes_the_estimate_as_printed():
    page, printed = PAGE.read_text(), _estimate()
    (block,) = re.findall(r"```text\n(Estimate:.*?)```", page, flags=re.S)
    assert block.strip() == printed.strip(), "re-run `python benchmarks/bench.py --estimate` and paste its output"
    table = page[page.index("## 6. What to expect"):page.index("The estimate, as")]
    quoted = set(re.findall(r"(\d+\.\d\d) GiB", table))
    printed16 = _estimate("--batch", "16")
    assert quoted and quoted <= set(re.findall(r"(\d+\.\d\d) GiB", printed + printed16)), quoted
