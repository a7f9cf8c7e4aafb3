"""The rules the package's structure keeps (docs/design.md, STYLE.md), checked on its source.

An AST walk of rl/, envs/ and agents/: no import cycles between rl modules, imports that
point one way down the layers of rl/, no private name taken from another module, imports
inside functions only where a ``# lazy: <reason>`` comment says why, envs/agents never
importing rl, short module headers, one PPO iteration loop.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The layers of rl/, in the order the data flows up through them: a module may import its
# own layer and the layers before it, never a later one.
LAYERS = ("rl.runs", "rl.measure", "rl.train", "rl.peers", "rl.sweeps", "rl.analysis",
          "rl.study", "rl.bench", "rl.advise", "rl.cli")

# Private names another package owns and has not made public yet: (importer, name, why).
PRIVATE_ALLOWED = {
    ("rl.bench.envs", "envs.make._BACKEND_PACKAGES"):
        "envs/ is owned separately; which package each native backend needs",
}

MAX_HEADER_LINES = 15


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources(package: str) -> dict[str, tuple[Path, ast.Module, list[str]]]:
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        out[module_name(path)] = (path, ast.parse(text), text.splitlines())
    return out


RL = sources("rl")


def resolve(name: str) -> str | None:
    """The rl module ``name`` refers to (a module, or a package's __init__)."""
    while name:
        if name in RL:
            return name
        name = name.rpartition(".")[0]
    return None


def imported(node: ast.Import | ast.ImportFrom) -> list[tuple[str, str | None]]:
    """(module, name or None) for each name the statement imports."""
    if isinstance(node, ast.Import):
        return [(alias.name, None) for alias in node.names]
    return [(node.module or "", alias.name) for alias in node.names]


def module_level_imports(tree: ast.Module):
    """Import statements run when the module is imported (not inside a def)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            stack.extend(ast.iter_child_nodes(node))
        elif isinstance(node, ast.ExceptHandler):
            stack.extend(node.body)


def function_imports(tree: ast.Module):
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    yield node


def rl_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for name, (_, tree, _) in RL.items():
        for node in module_level_imports(tree):
            for module, alias in imported(node):
                if module != "rl" and not module.startswith("rl."):
                    continue
                target = resolve(f"{module}.{alias}" if alias else module)
                if target is not None and target != name:
                    edges[name].add(target)
    return edges


def layer_of(module: str) -> int | None:
    for i, layer in enumerate(LAYERS):
        if module == layer or module.startswith(layer + "."):
            return i
    return None


def test_rl_modules_import_each_other_without_cycles():
    edges = rl_edges()
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for module in sorted(RL):
        if module not in state:
            visit(module)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_every_rl_module_sits_in_a_layer_and_imports_point_down():
    outside = [m for m in RL if m != "rl" and layer_of(m) is None]
    assert not outside, f"modules outside the layers {LAYERS}: {outside}"
    upward = []
    for module, targets in rl_edges().items():
        for target in targets:
            if target == "rl":
                continue
            if layer_of(target) > layer_of(module):
                upward.append(f"{module} imports {target}")
    assert not upward, "imports that point up the layers:\n" + "\n".join(sorted(upward))


def test_each_subpackage_says_its_job_in_its_init_docstring():
    for layer in LAYERS:
        _, tree, _ = RL[layer]
        doc = ast.get_docstring(tree)
        assert doc and len(doc.split()) >= 8, f"{layer}/__init__.py needs a docstring: its job"


def test_no_private_name_is_imported_from_another_module():
    found = []
    for name, (_, tree, _) in RL.items():
        for fn_or_mod in (module_level_imports(tree), function_imports(tree)):
            for node in fn_or_mod:
                if not isinstance(node, ast.ImportFrom) or node.module == "__future__":
                    continue
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        key = (name, f"{node.module}.{alias.name}")
                        if key not in PRIVATE_ALLOWED:
                            found.append(f"{name}: from {node.module} import {alias.name}")
    assert not found, "private names imported across modules (make them public):\n" + \
        "\n".join(found)


def test_imports_inside_functions_say_why():
    unexplained = []
    for path, tree, lines in RL.values():
        for node in function_imports(tree):
            text = " ".join(lines[node.lineno - 1:node.end_lineno])
            if "# lazy:" not in text or not text.split("# lazy:", 1)[1].strip():
                unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno}: "
                                   f"{lines[node.lineno - 1].strip()}")
    assert not unexplained, ("imports inside functions are for optional or slow dependencies "
                             "and need a '# lazy: <reason>' comment:\n" + "\n".join(unexplained))


@pytest.mark.parametrize("package", ["envs", "agents"])
def test_envs_and_agents_never_import_rl(package):
    bad = []
    for name, (_, tree, _) in sources(package).items():
        for node in ast.walk(tree):  # every import, also inside functions
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for module, _ in imported(node):
                    if module == "rl" or module.startswith("rl."):
                        bad.append(f"{name} imports {module}")
    assert not bad, "\n".join(bad)


def test_module_headers_are_short_and_point_to_docs_for_the_story():
    long = []
    for path, tree, _ in RL.values():
        doc = ast.get_docstring(tree, clean=False)
        assert doc, f"{path.relative_to(ROOT)} has no module docstring"
        if len(doc.strip().splitlines()) > MAX_HEADER_LINES:
            long.append(f"{path.relative_to(ROOT)}: {len(doc.strip().splitlines())} lines")
    assert not long, f"module headers over {MAX_HEADER_LINES} lines (move the story to " \
        "docs/):\n" + "\n".join(long)
    for doc_link in {link for _, tree, _ in RL.values()
                     for link in _docs_links(ast.get_docstring(tree) or "")}:
        assert (ROOT / doc_link).exists(), f"a module header links to missing {doc_link}"


def _docs_links(text: str) -> list[str]:
    return [word.strip("().,;:`'\"") for word in text.split() if word.startswith("docs/")
            or word.startswith("(docs/")]


def test_there_is_one_ppo_iteration_loop():
    """ppo_update is called from the loop, and elsewhere only by the FLOP-rate benchmark,
    which times one update alone (no rollout, no metrics row: not a second loop)."""
    callers = []
    for name, (_, tree, _) in RL.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ppo_update":
                callers.append(name)
    assert sorted(callers) == ["rl.bench.flops", "rl.train.loop"], callers
