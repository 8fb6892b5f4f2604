"""The house rules of docs/architecture.md, checked on the source: imports run one way
(scripts -> siblings -> core -> leaves, so there is no circle), leaves import no project
module and nothing beyond numpy, scipy, constriction and (for PNG) Pillow, and inside every
module each section uses only names defined in its own section or the ones above it."""
import ast
import re
import sys

import pytest

from tests.helpers import ROOT

# a module may import only modules of a lower rank
RANKS = {"bits_back_coder": 0, "data_movement": 0, "cli_kit": 0, "mlp": 0, "compressors": 0,
         "file_container": 0.5,                  # a leaf above the CLI kit, which it uses
         "spline_images_factorial_vq": 1, "paper_table": 1.5, "neural_models": 2,
         "neural_coding": 2.5, "neural_codes": 3,
         "visualize_spline_images_factorial_vq": 4, "make_spline_images_factorial_vq_gif": 5}
LEAF_LIBRARIES = {"numpy", "scipy", "constriction", "PIL"}   # PIL: PNG, a compressor
SECTION = re.compile(r"^# -{20,} (.+)$")


def imports(module):
    """Top-level package names a module imports, anywhere in the file (lazy imports too)."""
    tree = ast.parse((ROOT / f"{module}.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_every_python_module_of_the_project_has_a_rank():
    assert {p.stem for p in ROOT.glob("*.py")} == set(RANKS)


@pytest.mark.parametrize("module", RANKS)
def test_imports_run_one_way(module):
    project = imports(module) & set(RANKS)
    upward = sorted(m for m in project if RANKS[m] >= RANKS[module])
    assert not upward, f"{module} imports {upward}, which are not below it"


@pytest.mark.parametrize("module", [m for m, rank in RANKS.items() if rank < 1])
def test_leaves_use_only_the_standard_library_the_numeric_libraries_and_lower_leaves(module):
    below = {m for m, rank in RANKS.items() if rank < RANKS[module]}
    outside = imports(module) - LEAF_LIBRARIES - set(sys.stdlib_module_names) - below
    assert not outside, f"{module} imports {sorted(outside)}"


def forward_references(source):
    """(line, name, section, section of name) for every use of a top-level name inside a
    section above the one that defines it."""
    lines = source.split("\n")
    heads = [i + 1 for i, line in enumerate(lines) if SECTION.match(line)]
    titles = ["top"] + [SECTION.match(lines[i - 1]).group(1) for i in heads]
    section = lambda lineno: sum(h <= lineno for h in heads)
    tree = ast.parse(source)
    defined = {}
    for node in tree.body:
        targets = [node] if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else \
            getattr(node, "targets", [getattr(node, "target", None)])
        for target in targets:
            if isinstance(target, (ast.FunctionDef, ast.ClassDef)):
                defined.setdefault(target.name, section(node.lineno))
            elif target is not None:
                for n in ast.walk(target):
                    if isinstance(n, ast.Name):
                        defined.setdefault(n.id, section(node.lineno))
    found = []
    for node in tree.body:
        here = section(node.lineno)
        for n in ast.walk(node):
            later = isinstance(n, ast.Name) and defined.get(n.id, 0) > here
            if later and isinstance(n.ctx, ast.Load):
                found.append((n.lineno, n.id, titles[here], titles[defined[n.id]]))
    return found


@pytest.mark.parametrize("module", RANKS)
def test_each_section_uses_only_the_sections_above_it(module):
    assert not forward_references((ROOT / f"{module}.py").read_text())


def test_the_section_check_finds_a_forward_reference():
    bar = "# " + "-" * 30
    source = f"{bar} one\n\ndef f():\n    return g()\n\n\n{bar} two\n\ndef g():\n    return 1\n"
    assert forward_references(source) == [(4, "g", "one", "two")]
