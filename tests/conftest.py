"""Shared fixtures: paths to the repository and the real mini-MIAS data, service policy."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Tests read CLI output, and rich wraps it at the terminal's width: under `make test` in a
# narrow terminal a message split over two lines no longer matched. One wide, fixed width
# for every console the CLI creates (module-level consoles read it when they are built,
# i.e. after this file is loaded) makes that output independent of the terminal; the
# suite's subprocesses inherit it.
_TERMINAL_COLUMNS = shutil.get_terminal_size().columns
os.environ["COLUMNS"] = "400"
os.environ.pop("LINES", None)


@pytest.hookimpl(trylast=True)
def pytest_configure(config) -> None:
    """pytest's own report keeps the real terminal's width."""
    if config.pluginmanager.get_plugin("terminalreporter") is not None:
        config.get_terminal_writer().fullwidth = _TERMINAL_COLUMNS


def require_services() -> bool:
    """True in CI: tests that need a server/browser must fail instead of skipping."""
    return os.environ.get("MAMMOLENS_REQUIRE_SERVICES", "") not in ("", "0", "false")


def skip_or_fail(reason: str) -> None:
    """Skip a test whose external tool is missing, or fail when CI requires it."""
    if require_services():
        pytest.fail(f"required for this run (MAMMOLENS_REQUIRE_SERVICES=1): {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def mias_dir() -> Path:
    """The development portion of mini-MIAS beside the checkout (../shared/datasets/mini-mias)."""
    for cand in (REPO_ROOT.parent / "shared" / "datasets" / "mini-mias", REPO_ROOT / "shared" / "datasets" / "mini-mias"):
        if (cand / "Info.txt").exists():
            return cand
    pytest.skip("mini-MIAS development data not found beside the checkout")


@pytest.fixture(scope="session")
def crash_corpus(tmp_path_factory) -> Path:
    """The DICOM crash corpus (../shared/dicom-crash-corpus/build_all.py), built once per session:
    one file per decoder crash / panic / stray exception / NaN signature, plus controls."""
    import subprocess
    import sys

    for cand in (REPO_ROOT.parent / "shared" / "dicom-crash-corpus", REPO_ROOT / "shared" / "dicom-crash-corpus"):
        if (cand / "build_all.py").exists():
            break
    else:
        pytest.skip("dicom-crash-corpus not found beside the checkout (../shared/dicom-crash-corpus)")
    out = tmp_path_factory.mktemp("crash-corpus")
    proc = subprocess.run([sys.executable, str(cand / "build_all.py"), str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (small models: threads only add contention on a busy machine)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --- own_process: tests that load foreign native runtimes run in a child pytest -------------
# ONNX Runtime, OpenVINO and inductor bring their own thread pools and allocators into the
# process. In one suite process beside torch's OpenMP pool and the sandbox's forked workers,
# that once ended in a segfault in a *later* module (CI, 2026-11-29), which took the whole
# run down. Modules marked ``own_process`` therefore run in one child pytest per module; the
# parent replays the child's reports, so -k/-m selection, skips and failures read as usual,
# and a crash of the child fails only that module's tests, with the child's output.
_CHILD_REPORTS = "MAMMOLENS_OWN_PROCESS_REPORTS"


def pytest_runtest_logreport(report) -> None:
    path = os.environ.get(_CHILD_REPORTS)
    if path:  # inside the child: hand every report to the parent
        import json

        cfg = _CHILD_CONFIG[0]
        data = cfg.hook.pytest_report_to_serializable(config=cfg, report=report)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(data) + "\n")


_CHILD_CONFIG: list = []


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session) -> None:
    _CHILD_CONFIG[:] = [session.config]


def _run_module_in_child(item) -> dict[str, list]:
    """Run the marked tests of ``item``'s module in one child pytest; reports by node id."""
    import json
    import subprocess
    import sys

    session = item.session
    module = item.nodeid.split("::")[0]
    items = [it for it in session.items if it.nodeid.split("::")[0] == module and it.get_closest_marker("own_process")]
    ids = [it.nodeid for it in items]
    base = session.config._tmp_path_factory.getbasetemp() / "own_process" / module.replace("/", "_")
    base.mkdir(parents=True, exist_ok=True)
    reports = base / "reports.jsonl"
    reports.unlink(missing_ok=True)
    env = dict(os.environ, **{_CHILD_REPORTS: str(reports)})
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "", f"--basetemp={base / 'tmp'}", *ids]
    proc = subprocess.run(cmd, cwd=session.config.rootpath, env=env, capture_output=True, text=True)
    by_id: dict[str, list] = {}
    if reports.exists():
        for line in reports.read_text(encoding="utf-8").splitlines():
            rep = session.config.hook.pytest_report_from_serializable(config=session.config, data=json.loads(line))
            if isinstance(rep.longrepr, list):  # a skip's (path, line, reason): JSON made it a list
                rep.longrepr = tuple(rep.longrepr)
            by_id.setdefault(rep.nodeid, []).append(rep)
    tail = (proc.stdout[-4000:] + "\n" + proc.stderr[-4000:]).strip()
    for it in items:  # a test the child never finished (crash, kill) fails with the child's output
        if not any(r.when == "teardown" for r in by_id.get(it.nodeid, [])):
            msg = f"child pytest exited {proc.returncode} before this test finished:\n{tail}"
            by_id[it.nodeid] = [pytest.TestReport(it.nodeid, it.location, {}, "failed", msg, "call")]
    return by_id


_CHILD_RESULTS: dict[str, dict[str, list]] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    if os.environ.get(_CHILD_REPORTS) or item.get_closest_marker("own_process") is None:
        return None
    module = item.nodeid.split("::")[0]
    if module not in _CHILD_RESULTS:
        _CHILD_RESULTS[module] = _run_module_in_child(item)
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    for rep in _CHILD_RESULTS[module].get(item.nodeid, []):
        item.ihook.pytest_runtest_logreport(report=rep)
    # what runtestprotocol's teardown does: leave the setup stack as ``nextitem`` needs it
    # (the module and package nodes the previous in-process item set up are torn down
    # here when this item ends its package)
    item.session._setupstate.teardown_exact(nextitem)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


def pytest_collection_modifyitems(config, items) -> None:
    if os.environ.get(_CHILD_REPORTS):
        return
    for it in items:  # the parent only waits for the child, whose tests keep their own timeouts
        if it.get_closest_marker("own_process") is not None:
            it.add_marker(pytest.mark.timeout(0), append=False)
