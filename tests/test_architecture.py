"""ARCHITECTURE.md's rules, checked: the import graph of the product packages has no cycle,
counting imports inside functions (so none of those exists to dodge one), nothing imports
the pipeline, and only distill/run_folder.py names the run folder's files."""

import ast
import re

from tests.conftest import ROOT

PACKAGES = ("teacher", "student", "distill", "ray_cluster", "eval")


def modules() -> dict[str, ast.Module]:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts): ast.parse(p.read_text())
            for pkg in PACKAGES for p in sorted((ROOT / pkg).glob("*.py"))}


def imports(tree: ast.Module, known: set[str]) -> set[str]:
    """Every project module `tree` imports, at the top or inside a function."""
    out = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        out |= {n for n in names if n in known}
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycle_even_through_imports_inside_functions():
    mods = modules()
    graph = {m: imports(t, set(mods)) - {m} for m, t in mods.items()}
    assert len(graph) > 40 and sum(map(len, graph.values())) > 80  # the walk found the graph
    assert cycles(graph) == []
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]  # the check can fail


def test_nothing_imports_the_pipeline():
    mods = modules()
    assert [m for m, t in mods.items() if "distill.pipeline" in imports(t, set(mods))] == []


RUN_FILES = re.compile(r'"(train\.json|eval\.json|summary\.json|DONE|stages\.json|manifest\.json|comparison\.json|'
                       r'cache\.sqlite|verdicts\.jsonl|fables-[^"]*\.json)"|/ "(students|teachers|judge|compare|checkpoints|merged)"')


def test_only_the_run_folder_module_names_the_run_folders_files():
    named = [f"{p.relative_to(ROOT)}: {m.group(0)}" for pkg in (*PACKAGES, "benchmarks")
             for p in sorted((ROOT / pkg).glob("*.py")) if p.name != "run_folder.py"
             for m in RUN_FILES.finditer(p.read_text())]
    assert named == []
    assert RUN_FILES.search('run_dir / "students" / name') and RUN_FILES.search('p = d / "eval.json"')
