"""The package's layering: serving -> pipelines -> {media, models} -> {schema, settings}, no cycles.

Read from the source with `ast`, so lazy imports inside functions count too.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ltx2"
# Higher floors may import lower ones, never the reverse; media and models don't import each other.
FLOORS = {"serving": 3, "pipelines": 2, "media": 1, "models": 1}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:  # `from . import x` imports the module x
                    candidate = f"{target}.{alias.name}"
                    is_module = (PACKAGE.parent / (candidate.replace(".", "/") + ".py")).exists()
                    found.add(candidate if is_module else target)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {m for m in found if m.startswith("ltx2") and m != name}
    return graph


def floor(module: str) -> tuple[str, int]:
    parts = module.split(".")
    sub = parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in FLOORS) else ""
    return sub, FLOORS.get(sub, 0)


def test_the_reader_sees_the_known_edges():
    graph = imports()
    assert "ltx2.pipelines.generate" in graph["ltx2.serving.service"]
    assert "ltx2.models.loaded" in graph["ltx2.pipelines.generate"]
    assert "ltx2.schema" in graph["ltx2.media.inputs"]


def test_no_import_runs_upwards_or_sideways():
    wrong = []
    for module, targets in imports().items():
        sub, level = floor(module)
        for target in targets:
            target_sub, target_level = floor(target)
            if level and target_level and sub != target_sub and target_level >= level:
                wrong.append(f"{module} -> {target}")
    assert not wrong, wrong


def test_no_import_cycles():
    graph = imports()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target):] + [target])
            elif target in graph and target not in state:
                visit(target, stack + [target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles
