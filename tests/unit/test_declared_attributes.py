"""Every attribute a class of the project's packages keeps is declared in its `__init__`: a reader
sees the whole state of an object in one place, not spread over `setup()` and the methods that
happen to run first. (Classes with a base class are left out: their attributes may be declared
there.)"""

import ast

from tests.unit.test_import_graph import module_files


def undeclared_attributes() -> dict[str, list[str]]:
    found = {}
    for module, path in module_files().items():
        for cls in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(cls, ast.ClassDef) or cls.bases:
                continue
            methods = [node for node in cls.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]
            if not any(method.name == "__init__" for method in methods):
                continue
            declared, elsewhere = set(), {}
            for method in methods:
                for name in assigned_attributes(method):
                    if method.name == "__init__":
                        declared.add(name)
                    else:
                        elsewhere.setdefault(name, method.name)
            missing = [
                f"{name} (set in {where})" for name, where in elsewhere.items() if name not in declared
            ]
            if missing:
                found[f"{module}.{cls.name}"] = missing
    return found


def assigned_attributes(method: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(method):
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets = [node.target]
        for target in targets:
            for part in ast.walk(target):
                if (
                    isinstance(part, ast.Attribute)
                    and isinstance(part.value, ast.Name)
                    and part.value.id == "self"
                ):
                    names.add(part.attr)
    return names


def test_every_attribute_is_declared_in_init():
    assert undeclared_attributes() == {}
