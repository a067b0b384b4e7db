"""Mutation testing of the modules that hold rules, one module at a time, with cosmic-ray.

Dev only: not part of CI's run (too slow) and nothing in `ltx2` imports it. `tools/mutate` runs it at
the lowest CPU priority; see the README's development section. What it does:

- Copies the working tree (tracked and untracked, not ignored) to `.mutate/<target>/tree`, so
  mutants are written there and never into your files.
- Makes cosmic-ray's mutants of the target's module, keeps a sufficient set of operators (below),
  and runs, for each mutant, only the tests that cover that module (`tools/mutation_targets.py`),
  fastest stage first, stopping at the first failure. A mutant is killed when a test fails (or
  times out), survives when every test passes.
- Keeps results in `.mutate/<target>/session.sqlite`, so a run can stop (`--minutes`, Ctrl-C) and
  go on later. When the module's source changes, its results are dropped; when only tests change,
  the survivors are tried again and the killed stay killed (`--fresh` redoes everything).
- Prints a score per module: killed / (mutants - marked equivalent).
- `--planted` plants the bug kinds named in tools/mutation_targets.py (each a one-line edit a
  developer could make) one at a time and checks that the named tests kill each.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation_targets import EQUIVALENT, PLANTED, TARGETS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutate"

# cosmic-ray's binary-operator replacement makes every operator into every other one (11 mutants per
# `+`, most of them bit shifts of floats that die on the first TypeError). We keep, per operator, the
# replacements a developer's slip could produce: the inverse operation and one neighbour.
KEEP_BINARY = {
    "Add": ("Sub", "Mul"), "Sub": ("Add", "Div"), "Mul": ("Div", "Add"), "Div": ("Mul", "Sub"),
    "FloorDiv": ("Div", "Mul"), "Mod": ("FloorDiv", "Sub"), "Pow": ("Mul", "Div"),
    "LShift": ("RShift",), "RShift": ("LShift",), "BitOr": ("BitAnd",), "BitAnd": ("BitOr",),
    "BitXor": ("BitOr",),
}


def kept_operator(name: str) -> bool:
    op = name.removeprefix("core/")
    if op.startswith("ReplaceBinaryOperator_"):
        source, target = op.removeprefix("ReplaceBinaryOperator_").split("_")
        return target in KEEP_BINARY.get(source, ())
    if op.startswith("ReplaceUnaryOperator_"):
        return not op.endswith("_Invert")  # `~x` of a float is a TypeError, not a plausible slip
    return True


# --------------------------------------------------------------------------------------------
# The scratch tree


def _source_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                         capture_output=True).stdout.decode()
    return [f for f in out.split("\0") if f and (ROOT / f).is_file()]


def refresh_tree(tree: Path) -> None:
    """Make `tree` an exact copy of the working tree's files (real copies: mutants are written there)."""
    if tree.exists():
        shutil.rmtree(tree)
    for rel in _source_files():
        dest = tree / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest)


PYTEST_ARGS = ["-x", "-q", "-p", "no:cacheprovider", "-p", "no:schemathesis", "--no-header", "-o", "addopts=",
               "--hypothesis-seed=0"]


class ForkRunner:
    """Runs a target's test stages in forked children of one warm process.

    Importing torch, diffusers and transformers costs seconds of CPU; paying it once instead of once per
    mutant is most of the speed. The parent imports only third-party modules (the ones collecting the
    tests imports, found in a separate process) and never `ltx2` or a test module, so every child
    imports those fresh from the tree, mutant included. torch runs one thread: a forked child must not
    inherit a started OpenMP pool, and one thread is the polite share of this machine anyway.
    """

    def __init__(self, tree: Path, stages: list[list[str]]) -> None:
        self.tree, self.stages = tree, stages
        os.environ["PYTHONPATH"] = str(tree)  # for the servers some tests start as real processes
        os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
        sys.dont_write_bytecode = True
        os.chdir(tree)
        sys.path.insert(0, str(tree))
        probe = ("import json, sys, pytest; pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider', "
                 f"*{[t for stage in stages for t in stage]!r}]); print('MODULES=' + json.dumps(sorted(sys.modules)))")
        out = subprocess.run([sys.executable, "-c", probe], cwd=tree, capture_output=True, text=True).stdout
        names = json.loads(next(ln for ln in out.splitlines() if ln.startswith("MODULES="))[8:])
        import importlib

        import torch

        torch.set_num_threads(1)
        for name in names:
            if name.split(".")[0] in ("ltx2", "__main__") or name.startswith(("test_", "conftest")):
                continue
            with contextlib.suppress(Exception):
                module = importlib.import_module(name)
                if str(getattr(module, "__file__", "") or "").startswith(str(tree)):
                    sys.modules.pop(name, None)  # a helper from the tree itself (miniature, servers)

    def run(self, timeout: float) -> tuple[bool, float, str]:
        start = time.monotonic()
        output = []
        for stage in self.stages:
            passed, text = self._run_stage(stage, start + timeout)
            output.append(text)
            if not passed:
                return False, time.monotonic() - start, "\n".join(output)
        return True, time.monotonic() - start, "\n".join(output)

    def _run_stage(self, stage: list[str], deadline: float) -> tuple[bool, str]:
        import tempfile

        with tempfile.TemporaryFile() as log:
            pid = os.fork()
            if pid == 0:  # the child: fresh ltx2 and tests, then pytest
                code = 3
                try:
                    os.setsid()
                    os.dup2(log.fileno(), 1)
                    os.dup2(log.fileno(), 2)
                    tree = str(self.tree)
                    for name, module in list(sys.modules.items()):
                        if name.split(".")[0] == "ltx2" or str(getattr(module, "__file__", "") or "").startswith(tree):
                            del sys.modules[name]
                    import pytest

                    code = int(pytest.main([*PYTEST_ARGS, *stage]))
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            status = None
            try:
                while status is None:
                    done, raw = os.waitpid(pid, os.WNOHANG)
                    if done:
                        status = os.waitstatus_to_exitcode(raw)
                    elif time.monotonic() > deadline:
                        _kill_group(pid)
                        return False, "timeout"
                    else:
                        time.sleep(0.05)
            except BaseException:
                _kill_group(pid)  # stopped: take the test run (and any server it started) down too
                raise
            log.seek(0)
            return status == 0, log.read().decode(errors="replace")


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def run_tests(tree: Path, stages: list[list[str]], timeout: float | None = None) -> tuple[bool, float, str]:
    """The stages in a fresh process each (for planted bugs and checks: no warm parent needed)."""
    start = time.monotonic()
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    for stage in stages:
        try:
            proc = subprocess.run([sys.executable, "-m", "pytest", *PYTEST_ARGS, *stage], cwd=tree, env=env,
                                  capture_output=True, timeout=timeout, start_new_session=True)
        except subprocess.TimeoutExpired:
            return False, time.monotonic() - start, "timeout"
        if proc.returncode != 0:
            return False, time.monotonic() - start, (proc.stdout + proc.stderr).decode(errors="replace")
    return True, time.monotonic() - start, ""


# --------------------------------------------------------------------------------------------
# Sessions


def _fingerprint(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        # Named relative to the checkout: results stay valid in a clone or a moved checkout.
        digest.update(str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path).encode())
        digest.update(path.read_bytes() if path.is_file() else b"<missing>")
    return digest.hexdigest()


def module_fingerprint(target: dict) -> str:
    """What the set of mutants depends on: the module's text and the operators kept (not the rest of
    this tool, so that improving it does not throw away hours of results)."""
    return hashlib.sha256((_fingerprint([ROOT / target["module"]]) + repr(sorted(KEEP_BINARY.items()))).encode()
                          ).hexdigest()


def _test_files(target: dict) -> list[Path]:
    files = {ROOT / t.split("::")[0] for stage in target["stages"] for t in stage}
    files |= {ROOT / "tests" / "conftest.py", ROOT / "tests" / "miniature.py", ROOT / "tests" / "servers.py"}
    return sorted(files)


def annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Where the annotations are, when `from __future__ import annotations` keeps them unevaluated."""
    import ast

    tree = ast.parse(source)
    postponed = any(isinstance(n, ast.ImportFrom) and n.module == "__future__"
                    and any(a.name == "annotations" for a in n.names) for n in tree.body)
    if not postponed:
        return []
    spans = []
    for node in ast.walk(tree):
        found = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            found.append(node.returns)
        elif isinstance(node, ast.arg) and node.annotation is not None:
            found.append(node.annotation)
        elif isinstance(node, ast.AnnAssign):
            found.append(node.annotation)
        spans += [((a.lineno, a.col_offset), (a.end_lineno, a.end_col_offset)) for a in found]
    return spans


def _equivalent_reason(name: str, module_lines: list[str], spec, annotations) -> str | None:
    """Why a mutant cannot change behaviour, if it cannot: in an annotation, or listed in EQUIVALENT."""
    start, end = tuple(spec.start_pos), tuple(spec.end_pos)
    if any(a <= start and end <= b for a, b in annotations):
        return "an annotation, never evaluated (from __future__ import annotations)"
    line = start[0]
    text = module_lines[line - 1] if 0 < line <= len(module_lines) else ""
    operator = spec.operator_name.removeprefix("core/")
    for entry in EQUIVALENT.get(name, ()):
        operators = (entry["operator"],) if isinstance(entry["operator"], str) else entry["operator"]
        if operator in operators and entry["line"] in text:
            if "mutant" in entry and entry["mutant"] not in _mutated_line(module_lines, spec):
                continue  # the same operator on this line, but another of its mutants (e.g. +1, not -1)
            return entry["why"]
    return None


def _mutated_line(module_lines: list[str], spec) -> str:
    """The mutant's version of the line it changes (for EQUIVALENT entries that name the mutated text)."""
    import cosmic_ray.plugins
    from cosmic_ray.mutating import mutate_code

    operator = cosmic_ray.plugins.get_operator(spec.operator_name)(**(getattr(spec, "operator_args", None) or {}))
    mutated = mutate_code("\n".join(module_lines) + "\n", operator, spec.occurrence)
    lines = (mutated or "").splitlines()
    line = tuple(spec.start_pos)[0]
    return lines[line - 1] if 0 < line <= len(lines) else ""


def init_session(name: str, target: dict, workdir: Path, tree: Path) -> None:
    from cosmic_ray.commands import init
    from cosmic_ray.work_db import WorkDB, use_db

    db_path = workdir / "session.sqlite"
    if db_path.exists():
        db_path.unlink()
    cwd = os.getcwd()
    os.chdir(tree)
    try:
        with use_db(str(db_path), WorkDB.Mode.create) as db:
            init([Path(target["module"])], db, {})
    finally:
        os.chdir(cwd)
    with contextlib.closing(sqlite3.connect(db_path)) as con, con:
        dropped = [job for job, op in con.execute("SELECT job_id, operator_name FROM mutation_specs")
                   if not kept_operator(op)]
        con.executemany("DELETE FROM mutation_specs WHERE job_id = ?", [(j,) for j in dropped])
        con.executemany("DELETE FROM work_items WHERE job_id = ?", [(j,) for j in dropped])


def load_state(workdir: Path) -> dict:
    path = workdir / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_state(workdir: Path, state: dict) -> None:
    (workdir / "state.json").write_text(json.dumps(state, indent=1))


def prepare(name: str, fresh: bool) -> tuple[Path, Path, dict]:
    """Refresh the scratch tree and bring the session up to date with the sources."""
    target = TARGETS[name]
    workdir = WORK / name
    tree = workdir / "tree"
    workdir.mkdir(parents=True, exist_ok=True)
    refresh_tree(tree)
    state = load_state(workdir)
    module_fp = module_fingerprint(target)
    tests_fp = _fingerprint(_test_files(target) + [Path(__file__).resolve().with_name("mutation_targets.py")])
    db_path = workdir / "session.sqlite"
    if fresh or state.get("module") != module_fp or not db_path.exists():
        print(f"[{name}] making mutants of {target['module']}")
        init_session(name, target, workdir, tree)
        state = {"module": module_fp, "tests": tests_fp}
    elif state.get("tests") != tests_fp:
        with contextlib.closing(sqlite3.connect(db_path)) as con, con:
            n = con.execute("DELETE FROM work_results WHERE lower(test_outcome) = 'survived'").rowcount
        print(f"[{name}] tests changed: {n} survivor(s) will be tried again")
        state["tests"] = tests_fp
    save_state(workdir, state)
    return workdir, tree, target


class _Stop(BaseException):
    pass


def execute(name: str, fresh: bool, deadline: float | None) -> None:
    """Run (or go on with) one target's pending mutants. Runs in a child process of its own, which
    becomes the warm parent of the test runs (it changes directory, sys.path and imports)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _execute(name, fresh, deadline)
            code = 0
        except SystemExit as exc:
            print(exc)
            code = 2
        except KeyboardInterrupt:
            code = 130
        except BaseException:
            import traceback

            traceback.print_exc()  # e.g. cosmic-ray not installed: say so instead of a bare "stopped"
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    previous = signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGTERM))
    try:
        _, status = os.waitpid(pid, 0)
    except KeyboardInterrupt:
        os.kill(pid, signal.SIGINT)
        _, status = os.waitpid(pid, 0)
    finally:
        signal.signal(signal.SIGTERM, previous)
    code = os.waitstatus_to_exitcode(status)
    if code == 2:
        raise SystemExit(2)
    if code != 0:
        raise SystemExit("stopped")


def _execute(name: str, fresh: bool, deadline: float | None) -> None:
    import cosmic_ray.mutating
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult

    workdir, tree, target = prepare(name, fresh)
    db_path = str(workdir / "session.sqlite")
    module_path = tree / target["module"]
    module_lines = module_path.read_text().splitlines()
    annotations = annotation_spans(module_path.read_text())
    original = module_path.read_bytes()
    runner = ForkRunner(tree, target["stages"])
    ok, seconds, output = runner.run(timeout=1800)
    if not ok:
        print(output[-3000:])
        raise SystemExit(f"[{name}] the tests fail on the unmutated tree: fix them first")
    timeout = max(30.0, 4 * seconds + 10)

    def fork_run_tests(_command, _timeout):
        passed, _, text = runner.run(timeout)
        return (TestOutcome.SURVIVED if passed else TestOutcome.KILLED), text[-2000:]

    cosmic_ray.mutating.run_tests = fork_run_tests  # cosmic-ray mutates and records; we run the tests

    def stop(*_):
        raise _Stop

    signal.signal(signal.SIGTERM, stop)
    try:
        with use_db(db_path, WorkDB.Mode.open) as db:
            pending = sorted(db.pending_work_items,
                             key=lambda w: (w.mutations[0].start_pos, w.mutations[0].operator_name))
            print(f"[{name}] {len(pending)} of {db.num_work_items} mutants to run; "
                  f"the unmutated tests take {seconds:.1f} s")
            for i, item in enumerate(pending, 1):
                if deadline is not None and time.monotonic() > deadline:
                    print(f"\n[{name}] time is up; run again to go on")
                    break
                spec = item.mutations[0]
                reason = _equivalent_reason(name, module_lines, spec, annotations)
                if reason is not None:
                    db.set_result(item.job_id, WorkResult(worker_outcome=WorkerOutcome.SKIPPED, output=reason))
                    continue
                result = cosmic_ray.mutating.mutate_and_test(item.mutations, "", timeout)
                db.set_result(item.job_id, result)
                outcome = str(getattr(result.test_outcome, "value", result.test_outcome)).lower()
                mark = {"killed": ".", "survived": "S", "incompetent": "!"}.get(outcome, "?")
                print(mark, end="" if i % 60 else f" {i}/{len(pending)}\n", flush=True)
            print()
    except (KeyboardInterrupt, _Stop):
        print(f"\n[{name}] stopped; run again to go on")
        raise KeyboardInterrupt from None
    finally:
        module_path.write_bytes(original)  # never leave a mutant behind


# --------------------------------------------------------------------------------------------
# Reports


def score(name: str) -> dict | None:
    db_path = WORK / name / "session.sqlite"
    if not db_path.exists():
        return None
    with contextlib.closing(sqlite3.connect(db_path)) as con:
        total = con.execute("SELECT COUNT(*) FROM work_items").fetchone()[0]
        rows = dict(con.execute(
            "SELECT lower(COALESCE(test_outcome, worker_outcome)), COUNT(*) FROM work_results GROUP BY 1").fetchall())
    killed = rows.get("killed", 0) + rows.get("incompetent", 0)
    survived = rows.get("survived", 0)
    equivalent = rows.get("skipped", 0)
    done = killed + survived + equivalent
    counted = killed + survived
    return {"module": TARGETS[name]["module"], "mutants": total, "killed": killed, "survived": survived,
            "equivalent": equivalent, "pending": total - done,
            "score": 100.0 * killed / counted if counted else float("nan")}


def print_table(names: list[str]) -> None:
    print(f"{'target':<16} {'module':<34} {'mutants':>7} {'killed':>6} {'survived':>8} {'equiv.':>6} "
          f"{'pending':>7} {'score':>7}")
    for name in names:
        s = score(name)
        if s is None:
            print(f"{name:<16} {TARGETS[name]['module']:<34} {'not run':>7}")
            continue
        print(f"{name:<16} {s['module']:<34} {s['mutants']:>7} {s['killed']:>6} {s['survived']:>8} "
              f"{s['equivalent']:>6} {s['pending']:>7} {s['score']:>6.1f}%")


def print_survivors(name: str) -> None:
    db_path = WORK / name / "session.sqlite"
    if not db_path.exists():
        print(f"[{name}] not run yet")
        return
    with contextlib.closing(sqlite3.connect(db_path)) as con:
        rows = con.execute(
            "SELECT s.operator_name, s.start_pos_row, r.diff FROM work_results r JOIN mutation_specs s "
            "ON r.job_id = s.job_id WHERE lower(r.test_outcome) = 'survived' ORDER BY s.start_pos_row").fetchall()
        skipped = con.execute(
            "SELECT s.operator_name, s.start_pos_row, r.output FROM work_results r JOIN mutation_specs s "
            "ON r.job_id = s.job_id WHERE lower(r.worker_outcome) = 'skipped' ORDER BY s.start_pos_row").fetchall()
    for op, line, diff in rows:
        print(f"--- survived: {op} at line {line}")
        print("\n".join(ln for ln in (diff or "").splitlines() if ln.startswith(("-", "+")) and not ln.startswith(("---", "+++"))))
    for op, line, why in skipped:
        print(f"--- equivalent: {op} at line {line}: {why}")


# --------------------------------------------------------------------------------------------
# Planted bugs


def run_planted(only: list[str]) -> bool:
    tree = WORK / "planted" / "tree"
    ok_all = True
    for kind in PLANTED:
        if only and not any(o in kind["kind"] for o in only):
            continue
        refresh_tree(tree)
        path = tree / kind["file"]
        text = path.read_text()
        count = text.count(kind["old"])
        if count != 1:
            print(f"STALE     {kind['kind']}: the line to change is found {count} times in {kind['file']}; update it")
            ok_all = False
            continue
        path.write_text(text.replace(kind["old"], kind["new"]))
        passed, seconds, output = run_tests(tree, [kind["tests"]], timeout=900)
        verdict = "survived" if passed else "killed"
        ok_all &= not passed
        failed = [ln for ln in output.splitlines() if ln.startswith("FAILED") or ln.startswith("ERROR")]
        print(f"{verdict.upper():<9} {kind['kind']} ({seconds:.0f} s){': ' + failed[0] if failed else ''}")
    return ok_all


# --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help=f"targets to run: {', '.join(TARGETS)}")
    parser.add_argument("--all", action="store_true", help="run every target, one after another")
    parser.add_argument("--minutes", type=float, help="stop after this many minutes; run again to go on")
    parser.add_argument("--fresh", action="store_true", help="forget saved results of these targets")
    parser.add_argument("--survivors", action="store_true", help="print each surviving mutant's diff")
    parser.add_argument("--planted", action="store_true", help="plant the known bug kinds (filter by words)")
    parser.add_argument("--list", action="store_true", help="list the targets and their tests")
    args = parser.parse_args()

    if args.list:
        for name, target in TARGETS.items():
            print(f"{name:<16} {target['module']:<36} " + " then ".join(" ".join(s) for s in target["stages"]))
        return
    if args.planted:
        WORK.mkdir(exist_ok=True)
        with _lock():
            sys.exit(0 if run_planted(args.targets) else 1)
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {unknown}; known: {', '.join(TARGETS)}")
    names = list(TARGETS) if args.all else args.targets
    if args.survivors:
        for name in names or list(TARGETS):
            print_survivors(name)
        return
    if names:
        WORK.mkdir(exist_ok=True)
        deadline = None if args.minutes is None else time.monotonic() + 60 * args.minutes
        with _lock():
            for name in names:
                execute(name, args.fresh, deadline)
    print_table(names or list(TARGETS))


@contextlib.contextmanager
def _lock():
    with open(WORK / "lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit("another tools/mutate is running here; one at a time") from None
        yield


if __name__ == "__main__":
    main()
