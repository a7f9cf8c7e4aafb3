"""The rules the package's structure keeps (docs/design.md, STYLE.md), checked on its source.

An AST walk of rl/, envs/ and agents/: no import cycles between rl modules, imports that
point one way down the layers of rl/, no private name taken from another module, imports
inside functions only where a ``# lazy: <reason>`` comment says why, envs/agents never
importing rl, short module headers, one PPO iteration loop; and the loop's spine
(docs/training-loop.md): its extension points typed with ``rl.train.protocols``, no private
names taken across packages, only the loop writing the metrics row.
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


# --- the loop's spine (#26) ---------------------------------------------------------------------

PROTOCOLS = {"schedule": "Schedule", "noise": "NoiseScale", "comm": "Comm"}
"""Loop's extension-point fields and the ``rl.train.protocols`` protocol each is typed with."""

IMPLEMENTATIONS = {
    "Schedule": ["rl.train.batch_schedule.FixedBatch", "rl.train.batch_schedule.AdaptiveBatch"],
    "NoiseScale": ["rl.measure.ppo_noise.PPONoiseScale", "rl.measure.free.FreeNoiseScale"],
    "Comm": ["rl.train.comm.LocalComm", "rl.train.comm.DistComm"],
}


def _class(module: str, name: str) -> ast.ClassDef:
    _, tree, _ = RL[module]
    found = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name]
    assert found, f"{module} defines no class {name}"
    return found[0]


def _members(cls: ast.ClassDef) -> set[str]:
    """Methods, class attributes and the ``self.x`` its methods assign."""
    out = {n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    for node in ast.walk(cls):
        for target in getattr(node, "targets", [getattr(node, "target", None)]):
            if isinstance(target, ast.Name):
                out.add(target.id)
            elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                    and target.value.id == "self":
                out.add(target.attr)
            elif isinstance(target, ast.Tuple):
                out |= {t.id for t in target.elts if isinstance(t, ast.Name)}
    return out


def test_loop_extension_points_are_typed_with_protocols():
    fields = {n.target.id: ast.unparse(n.annotation) for n in _class("rl.train.loop", "Loop").body
              if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    for name, protocol in PROTOCOLS.items():
        assert fields.get(name) == protocol, f"Loop.{name} is typed {fields.get(name)!r}"
        bases = [ast.unparse(b) for b in _class("rl.train.protocols", protocol).bases]
        assert bases == ["Protocol"], f"{protocol} is not a typing.Protocol: {bases}"
    untyped = [n for n, annotation in fields.items() if "Any" in annotation and n != "columns"]
    assert not untyped, f"Loop fields typed Any: {untyped}"


@pytest.mark.parametrize("protocol", sorted(IMPLEMENTATIONS))
def test_each_implementation_has_its_protocols_methods(protocol):
    wanted = {n.name for n in _class("rl.train.protocols", protocol).body
              if isinstance(n, ast.FunctionDef)}
    for path in IMPLEMENTATIONS[protocol]:
        module, _, name = path.rpartition(".")
        cls, have = _class(module, name), set()
        while cls is not None:  # its own methods and those of bases defined in the module
            have |= _members(cls)
            base = [ast.unparse(b) for b in cls.bases]
            cls = _class(module, base[0]) if base and base[0][0].isupper() and \
                base[0] != "Protocol" else None
        missing = sorted(wanted - have)
        assert not missing, f"{path} lacks {protocol}'s {missing}"


def test_the_loop_alone_writes_the_metrics_row():
    """Strategies and hooks return columns: no function outside rl.train.loop changes a
    ``row`` it was given (``row.update``, ``row[k] = ...``, ``row.pop``, ...)."""
    writes = []
    for name, (_, tree, _) in RL.items():
        if name == "rl.train.loop":
            continue
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if "row" not in {a.arg for a in fn.args.args + fn.args.kwonlyargs}:
                continue
            for node in ast.walk(fn):
                target = None
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                        node.func.attr in ("update", "setdefault", "pop", "clear", "popitem"):
                    target = node.func.value
                elif isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
                    targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) \
                        else [node.target]
                    target = next((t.value for t in targets if isinstance(t, ast.Subscript)),
                                  None)
                if isinstance(target, ast.Name) and target.id == "row":
                    writes.append(f"{name}.{fn.name}:{node.lineno}")
    assert not writes, "functions that write into the row they were given (return the " \
        "columns instead):\n" + "\n".join(writes)


def _imported_modules(tree: ast.Module) -> dict[str, str]:
    """Local name -> module of ours, for ``import a.b [as c]`` and ``from a import b``."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                out[alias.asname or alias.name.split(".")[0]] = \
                    alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                path = ROOT / node.module.replace(".", "/") / alias.name
                if path.with_suffix(".py").exists() or path.is_dir():
                    out[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return {k: v for k, v in out.items() if v.split(".")[0] in ("rl", "envs", "agents")}


def _package(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def test_no_private_name_is_taken_from_another_package():
    """Neither imported (``from rl.x import _y``, checked for rl above) nor read off an
    imported module (``x._y``), in rl/, envs/ and agents/."""
    found = []
    for package in ("rl", "envs", "agents"):
        for name, (path, tree, _) in sources(package).items():
            mine = _package(name, path)
            modules = _imported_modules(tree)
            for node in ast.walk(tree):
                taken = None
                if isinstance(node, ast.ImportFrom) and node.module and \
                        node.module.split(".")[0] in ("rl", "envs", "agents"):
                    taken = [(node.module, a.name) for a in node.names]
                elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                        and node.value.id in modules:
                    taken = [(modules[node.value.id], node.attr)]
                for module, attr in taken or []:
                    if not attr.startswith("_") or attr.startswith("__"):
                        continue
                    owner = module if (ROOT / module.replace(".", "/")).is_dir() \
                        else module.rpartition(".")[0]
                    if owner != mine and (name, f"{module}.{attr}") not in PRIVATE_ALLOWED:
                        found.append(f"{name}: {module}.{attr}")
    assert not found, "private names taken from another package:\n" + "\n".join(found)


# The files of a run directory that readers share (docs/run-directory.md): only rl/runs
# names them; a reader takes rl.runs.record (RunRecord, peek_config, peek_status,
# has_metrics, load_run_metrics...). Readers not moved yet: (module, name) -> why.
RUN_FILES = {"config.json", "status.json", "metrics.jsonl"}
RUN_FILE_CONSTANTS = {"CONFIG_FILE", "STATUS_FILE", "METRICS_FILE"}
RUN_FILES_ALLOWED = {
    ("rl.cli.app", "CONFIG_FILE"):
        "the train command's failure hint asks whether the run exists (is_file, beside the "
        "checkpoint folder): not moved yet (#26 item 2)",
    ("rl.cli.sharpness", "CONFIG_FILE"): "names config.json in its error message",
}


def test_only_rl_runs_names_the_run_files():
    """No module outside rl/runs opens config.json, status.json or metrics.jsonl by name
    (a string that is just the file's name, or the rl.runs.layout constant)."""
    found = []
    for name, (_, tree, _) in RL.items():
        if name == "rl.runs" or name.startswith("rl.runs."):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in RUN_FILES:
                taken = node.value
            elif isinstance(node, ast.ImportFrom) and node.module == "rl.runs.layout":
                taken = next((a.name for a in node.names if a.name in RUN_FILE_CONSTANTS), None)
            else:
                continue
            if taken is not None and (name, taken) not in RUN_FILES_ALLOWED:
                found.append(f"{name}:{node.lineno}: {taken}")
    assert not found, "run files opened by name outside rl/runs (read them through " \
        "rl.runs.record):\n" + "\n".join(found)


def test_the_run_files_allow_list_is_current():
    """Every allowed reader still names its file: a moved one leaves the list."""
    used = set()
    for name, (_, tree, _) in RL.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in RUN_FILES:
                used.add((name, node.value))
            elif isinstance(node, ast.ImportFrom) and node.module == "rl.runs.layout":
                used.update((name, a.name) for a in node.names if a.name in RUN_FILE_CONSTANTS)
    assert set(RUN_FILES_ALLOWED) <= used, set(RUN_FILES_ALLOWED) - used
