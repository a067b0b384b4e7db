import inspect
import json
import os
import resource
import sys
import types

import pytest
from hypothesis import settings
from servers import start_server, stop_server

# pyproject's addopts run the suite in `-n auto` xdist workers (see pytest_xdist_auto_num_workers). Each
# worker, and every server, CLI or example it starts (they inherit this environment), gets its share of
# the cores: torch's default of one thread per core in every process would have N processes spin on
# the same cores, and OpenMP's busy-waiting turns that into lost CPU time, not just slower steps.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
if WORKERS:
    _share = str(max(1, len(os.sched_getaffinity(0)) // WORKERS))
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_name, _share)
    if "torch" in sys.modules:  # read at torch's import; a plugin may have imported it already
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# Hypothesis's 200 ms deadline per example measures the machine's load, not a rule: with two workers and
# their servers on two cores an example that takes 40 ms alone can take 400 (a flaky "DeadlineExceeded").
settings.register_profile("ltx2", deadline=None)
settings.load_profile("ltx2")

MAX_WORKERS = 2  # each worker holds its own tiny models and servers: two reached 7.7 GB in all (README)
# What one worker and what it starts need at their peak (3.4 GB measured for the largest process): a machine
# with less than this per worker free (an 8 GB laptop) runs the suite in this one process, under 4 GB.
WORKER_MEMORY = 4 * 1024**3


def _memory_available() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            return next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return 0

# Names whose use means a new process: a server (servers.start_server/launch), the CLI or a benchmark
# (subprocess), Chromium (playwright). Such a test pays seconds of imports and start-up before it
# asserts anything, so it is `slow` without anyone having to remember to say so.
PROCESS_NAMES = frozenset({"start_server", "launch", "subprocess", "sync_playwright"})


def _starts_a_process(func, module, seen: set, depth: int = 3) -> bool:
    """Whether `func`'s code (its nested functions too) names a process starter, directly or through
    a function of its own module or of tests/servers.py, up to `depth` calls deep."""
    if depth < 0 or func in seen or not isinstance(func, types.FunctionType):
        return False
    seen.add(func)
    codes = [func.__code__]
    names: set[str] = set()
    while codes:
        code = codes.pop()
        names.update(code.co_names)
        codes.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    if names & PROCESS_NAMES:
        return True
    scope = func.__globals__ if module is None else vars(module)
    return any(_starts_a_process(scope.get(name), module, seen, depth - 1) for name in names
               if inspect.isfunction(scope.get(name)) and scope[name].__module__ in (func.__module__, "servers"))


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per core, at most MAX_WORKERS and one per WORKER_MEMORY of free memory
    (PYTEST_XDIST_AUTO_NUM_WORKERS overrides); none for one file (`--dist loadfile` would run it on one worker anyway, after seconds of starting them) and
    none with --peak-rss, whose figures are this process's and its children's; none for the bigmem tier."""
    files = {arg.split("::")[0] for arg in config.args}
    if config.getoption("peak_rss") or (len(files) == 1 and next(iter(files)).endswith(".py")):
        return 0
    marks = config.getoption("markexpr") or ""
    if "bigmem" in marks.replace("not bigmem", ""):  # ~10 GB a test: two at once would not fit 24 GB
        return 0
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return int(os.environ["PYTEST_XDIST_AUTO_NUM_WORKERS"])
    workers = min(MAX_WORKERS, len(os.sched_getaffinity(0)), _memory_available() // WORKER_MEMORY)
    return workers if workers > 1 else 0  # one worker is this process with a worker's start-up added


def pytest_addoption(parser):
    parser.addoption("--peak-rss", action="store_true",
                     help="list the tests that raised the peak resident memory of this process or of a child")
    parser.addoption("--cpu-report", metavar="FILE",
                     help="append each test file's CPU seconds (this process and the children it reaped: servers, "
                          "the CLI, sandboxes) to FILE as JSON lines, to find where the suite's time goes")


def _peaks() -> tuple[int, int]:
    """Peak RSS in bytes so far: this process's, and its largest finished child's (a server, the CLI)."""
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    report = item.config.getoption("cpu_report")
    if report:  # a file's module fixtures (its servers) finish with its last test, so they count to it
        started = _cpu_seconds()
        yield
        with open(report, "a") as out:
            out.write(json.dumps({"file": item.location[0], "cpu": _cpu_seconds() - started}) + "\n")
        return
    if not item.config.getoption("peak_rss"):
        yield
        return
    before = _peaks()
    yield
    after = _peaks()
    if after > before or after[1] > before[1]:
        item.config.stash.setdefault(_RAISED, []).append((item.nodeid, before, after))


_RAISED = pytest.StashKey[list]()


def pytest_terminal_summary(terminalreporter, config):
    raised = config.stash.get(_RAISED, None)
    if not config.getoption("peak_rss") or raised is None:
        return
    terminalreporter.section("peak RSS (GB): the tests that raised it")
    for nodeid, before, after in sorted(raised, key=lambda r: -max(r[2][0] - r[1][0], r[2][1] - r[1][1]))[:20]:
        terminalreporter.write_line(f"self {after[0] / 1e9:5.2f} (+{(after[0] - before[0]) / 1e9:.2f})  "
                                    f"child {after[1] / 1e9:5.2f} (+{(after[1] - before[1]) / 1e9:.2f})  {nodeid}")


def pytest_collection_modifyitems(config, items):
    """Mark `slow` every test that starts a process, itself or through any fixture it uses; the rest
    of the slow tests carry @pytest.mark.slow where they are written. `bigmem` tests are slow too."""
    for item in items:
        if item.get_closest_marker("slow") or not isinstance(item, pytest.Function):
            continue
        funcs = [item.function] + [d.func for defs in item._fixtureinfo.name2fixturedefs.values() for d in defs]
        if item.get_closest_marker("bigmem") or any(_starts_a_process(inspect.unwrap(f), None, set()) for f in funcs):
            item.add_marker(pytest.mark.slow)
    if WORKERS:
        # xdist hands out whole files (--dist loadfile, --no-loadscope-reorder) in this order: the files
        # with the most slow tests first, so that the last ones to start, while a worker may be idle,
        # are quick. The order within a file is kept; every worker computes the same order.
        slow: dict[str, int] = {}
        for item in items:
            slow[item.nodeid.split("::")[0]] = slow.get(item.nodeid.split("::")[0], 0) + bool(item.get_closest_marker("slow"))
        items.sort(key=lambda item: -slow[item.nodeid.split("::")[0]])


@pytest.fixture(scope="session")
def model():
    from ltx2 import load_model

    return load_model("tiny", device="cpu")


@pytest.fixture(scope="session")
def client(model, tmp_path_factory):
    from fastapi.testclient import TestClient

    from ltx2.serving.app import create_app
    from ltx2.settings import Settings

    settings = Settings(output_dir=str(tmp_path_factory.mktemp("output")))
    with TestClient(create_app(settings, model=model)) as test_client:
        yield test_client


@pytest.fixture
def make_client(model, tmp_path):
    """In-process apps on the session's model, each with its own settings, all sharing one output folder
    (a second client is the same server restarted); each is closed after the test."""
    from fastapi.testclient import TestClient

    from ltx2.serving.app import create_app
    from ltx2.settings import Settings

    clients = []

    def make(**settings):
        client = TestClient(create_app(Settings(output_dir=str(tmp_path / "out"), **settings), model=model))
        clients.append(client.__enter__())
        return clients[-1]

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture(scope="session")
def live_process(tmp_path_factory):
    """A real `python server.py` process on loopback with the default flags, as a user starts it, and its
    address: one per test process (xdist worker), shared by every file that needs no flags of its own,
    since each start costs ~7 s of CPU (torch, diffusers and the tiny model). A test may read its process
    (memory, children) but must leave it serving as it found it: no signals, no settings changed."""
    out = tmp_path_factory.mktemp("live")
    proc, base = start_server(out / "output", out / "server.log")
    yield proc, base
    stop_server(proc)


@pytest.fixture(scope="session")
def live_server(live_process):
    """The shared server's address (see live_process)."""
    return live_process[1]
