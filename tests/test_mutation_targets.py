"""tools/mutation_targets.py stays true to the code it describes: a module that moved, a test file that
was renamed, an equivalent-mutant entry whose line was edited away, or a planted bug whose line no longer
exists would otherwise make `tools/mutate` quietly test less (or nothing). No cosmic-ray needed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from mutation_targets import EQUIVALENT, PLANTED, TARGETS  # noqa: E402


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_each_target_names_its_module_and_existing_tests(name):
    target = TARGETS[name]
    assert (ROOT / target["module"]).is_file()
    assert target["stages"], "a target with no tests kills nothing"
    for stage in target["stages"]:
        files = [arg for arg in stage if arg.startswith("tests/")]
        assert files and all((ROOT / f).is_file() for f in files), stage


@pytest.mark.parametrize("name", sorted(EQUIVALENT))
def test_each_equivalent_entry_still_matches_a_line_of_its_module(name):
    assert name in TARGETS
    lines = (ROOT / TARGETS[name]["module"]).read_text().splitlines()
    for entry in EQUIVALENT[name]:
        assert entry["why"].strip(), entry
        operators = (entry["operator"],) if isinstance(entry["operator"], str) else entry["operator"]
        assert operators and all(isinstance(op, str) and op for op in operators), entry
        assert any(entry["line"] in line for line in lines), f"{name}: no line holds {entry['line']!r} any more"


@pytest.mark.parametrize("kind", PLANTED, ids=[k["kind"] for k in PLANTED])
def test_each_planted_bug_changes_exactly_one_place(kind):
    text = (ROOT / kind["file"]).read_text()
    assert text.count(kind["old"]) == 1
    assert kind["new"] != kind["old"]
    assert all((ROOT / f).is_file() for f in kind["tests"] if f.startswith("tests/"))
