"""The ``own_process`` marker (tests/conftest.py): marked modules run in a child pytest.

A small suite in a temporary folder, run with the repository's conftest: results, skips,
failures and a crash of the child read as usual, and an own_process module that ends its
package leaves the next package's setup intact.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_marked_modules_run_in_a_child_and_report_as_usual(tmp_path):
    (tmp_path / "conftest.py").write_text((REPO / "tests" / "conftest.py").read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    own_process: child\n", encoding="utf-8")
    a, b = tmp_path / "pkg_a", tmp_path / "pkg_b"
    a.mkdir()
    b.mkdir()
    (a / "test_plain.py").write_text("import os\ndef test_parent(): assert not os.environ.get('MAMMOLENS_OWN_PROCESS_REPORTS')\n")
    (a / "test_marked.py").write_text(
        "import os, pytest\n"
        "pytestmark = pytest.mark.own_process\n"
        "def test_in_child(): assert os.environ.get('MAMMOLENS_OWN_PROCESS_REPORTS')\n"
        "def test_fails(): assert 1 == 2\n"
        "def test_skips(): pytest.skip('no runtime')\n"
        "@pytest.mark.parametrize('n', [1, 2])\n"
        "def test_param(n, tmp_path): assert tmp_path.exists()\n"
        "def test_crash(): os.abort()\n"
        "def test_after_crash(): pass\n"
    )
    (b / "test_next.py").write_text("def test_next_package(): pass\n")
    env = {k: v for k, v in os.environ.items() if k != "MAMMOLENS_OWN_PROCESS_REPORTS"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 1, out
    for passed in ("pkg_a/test_plain.py::test_parent", "pkg_a/test_marked.py::test_in_child", "pkg_a/test_marked.py::test_param[1]",
                   "pkg_a/test_marked.py::test_param[2]", "pkg_b/test_next.py::test_next_package"):
        assert f"PASSED {passed}" in out, out
    assert "FAILED pkg_a/test_marked.py::test_fails" in out
    assert "SKIPPED" in out and "no runtime" in out
    # the child died in test_crash: it and the test after it fail with the child's exit status
    assert "FAILED pkg_a/test_marked.py::test_crash" in out and "FAILED pkg_a/test_marked.py::test_after_crash" in out
    assert "before this test finished" in out
    assert "not torn down properly" not in out and "INTERNALERROR" not in out
