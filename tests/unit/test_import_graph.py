"""No import circles: no module of the project's packages imports a module that imports it back,
directly or through others. Every import counts, at module level or inside a function (an import
moved into a function hides a circle from Python at start-up, not from a reader). An import inside
a function is there to keep start-up fast, and says so in a comment."""

import ast
import tomllib
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


def project_packages() -> list[str]:
    """The packages pyproject installs (`include = ["shared*", ...]`)."""
    config = tomllib.loads((PROJECT / "pyproject.toml").read_text())
    return [pattern.rstrip("*") for pattern in config["tool"]["setuptools"]["packages"]["find"]["include"]]


def module_files() -> dict[str, Path]:
    modules = {}
    for package in project_packages():
        for path in sorted((PROJECT / package).rglob("*.py")):
            parts = path.relative_to(PROJECT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_names(module: str, path: Path) -> set[str]:
    """Every module name an import statement anywhere in the file may load (`from a import b`:
    `a.b` when b is a module, else `a`)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    graph = {}
    for module, path in modules.items():
        edges = set()
        for name in imported_names(module, path):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                edges.add(name)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle as the path that closes it (a -> b -> a), or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def unexplained_function_imports() -> list[str]:
    """`file:line` of each run of imports inside a function with no comment on it or just above."""
    found = []
    for path in module_files().values():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines), str(path))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for body in statement_lists(node):
                for run in import_runs(body):
                    first, last = run[0].lineno, run[-1].end_lineno
                    text = lines[first - 2 : last]  # the line above the run, and the run
                    if not any("#" in line for line in text):
                        found.append(f"{path.relative_to(PROJECT)}:{first}")
    return found


def statement_lists(function: ast.AST) -> list[list[ast.stmt]]:
    return [
        getattr(node, field)
        for node in ast.walk(function)
        for field in ("body", "orelse", "finalbody")
        if isinstance(getattr(node, field, None), list) and not isinstance(node, ast.Module)
    ]


def import_runs(body: list[ast.stmt]) -> list[list[ast.stmt]]:
    runs, current = [], []
    for statement in body:
        if isinstance(statement, ast.Import | ast.ImportFrom):
            current.append(statement)
        elif current:
            runs, current = [*runs, current], []
    return runs + ([current] if current else [])


def test_the_graph_reads_every_package():
    graph = import_graph()
    assert {"deploy.driver", "trainer.grpo.trainer", "rollout_server.app", "rewards.client"} <= set(graph)
    assert "deploy.driver" in graph["deploy.commands"]  # an import inside a function counts


def test_no_module_imports_itself_back():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_a_circle_is_found_and_named():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_import_inside_a_function_says_why():
    assert unexplained_function_imports() == []
