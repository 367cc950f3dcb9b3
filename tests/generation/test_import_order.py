"""generation/ imports one way: foundation -> analysis -> motion -> render -> assembly.

Every module of the package is parsed (not imported) and each ``generation.*`` import it makes, anywhere in the
file (top level, inside functions, under ``if TYPE_CHECKING``), must name a module placed *earlier* in ``ORDER``.
A type-only import counts: it is still a dependency a reader has to follow, and the circles this test was written
against (rig <-> closing <-> render, deform/eyes/mouth -> rig) were mostly made of them.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "generation"

# Stages in pipeline order; within a stage a module may import the ones listed before it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # Errors, media I/O (decode the inputs, encode the video, the AudioTrack type) and small utilities.
    ("foundation", ("errors", "media", "concurrency", "controls")),
    ("analysis", ("face", "occlusion", "audio_features", "phonemes")),
    ("motion", ("visemes", "motion")),
    (
        "render",
        (
            "render.config",
            "render.deform",
            "render.mouth_source",
            "render.rig",
            "render.mouth",
            "render.eyes",
            "render.warp",
            "render.closing",
            "render.build",
            "render.renderer",
            "render",
        ),
    ),
    ("assembly", ("framing", "generator", "streaming", "")),  # "" = generation/__init__.py
)
ORDER: dict[str, int] = {name: i for i, name in enumerate(name for _, names in LAYERS for name in names)}
STAGE: dict[str, str] = {name: stage for stage, names in LAYERS for name in names}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    """'render.rig' for generation/render/rig.py, 'render' for generation/render/__init__.py, '' for the top."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def generation_imports(path: Path, root: Path = PACKAGE) -> set[str]:
    """Names (relative to the package, as in ORDER) of the generation modules that ``path`` imports.

    ``from generation.render import rig`` names the submodule when it is one, else the package itself.
    """
    own = module_name(path, root)
    package_parts = own.split(".") if own else []
    if path.name != "__init__.py":
        package_parts = package_parts[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package_parts[: len(package_parts) - (node.level - 1)]
                base_name = ".".join(["generation", *base, *([node.module] if node.module else [])])
            else:
                base_name = node.module or ""
            # `from generation.render import rig` depends on the submodule; `... import FaceRig` on the package.
            submodules = [f"{base_name}.{a.name}" for a in node.names if _is_module(root, f"{base_name}.{a.name}")]
            targets = submodules + ([base_name] if len(submodules) < len(node.names) else [])
        else:
            continue
        for target in targets:
            if target == "generation" or target.startswith("generation."):
                found.add(target.removeprefix("generation").removeprefix("."))
    return found - {own}


def _is_module(root: Path, dotted: str) -> bool:
    """Whether ``generation.x.y`` names a module or package file under ``root`` (the generation folder)."""
    path = root.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def all_modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def violations(root: Path = PACKAGE) -> list[str]:
    """Every import that goes sideways-up or to an unplaced module, as readable lines (empty when clean)."""
    problems = []
    modules = all_modules(root)
    for name, path in modules.items():
        if name not in ORDER:
            problems.append(f"generation.{name} ({path.name}) is not placed in ORDER: give it a stage")
            continue
        for target in sorted(generation_imports(path, root)):
            if target not in ORDER:
                if target in modules:
                    continue  # reported above as unplaced
                problems.append(f"generation.{name} imports generation.{target}, which does not exist")
                continue
            if ORDER[target] >= ORDER[name]:
                problems.append(
                    f"generation.{name} ({STAGE[name]}) imports generation.{target} ({STAGE[target]}), "
                    "which comes at or after it: an upward or circular import"
                )
    return problems


def cycles(root: Path = PACKAGE) -> list[list[str]]:
    """Import circles among generation's modules, whatever ORDER says (each found once, from its least name)."""
    graph = {name: generation_imports(path, root) for name, path in all_modules(root).items()}
    found: set[tuple[str, ...]] = set()

    def walk(start: str, node: str, trail: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                found.add(tuple(trail))
            elif nxt not in trail and nxt > start:
                walk(start, nxt, trail + [nxt])

    for start in sorted(graph):
        walk(start, start, [start])
    return [list(c) for c in sorted(found)]


def test_generation_imports_one_way() -> None:
    problems = violations()
    assert not problems, "\n".join(problems)


def test_generation_has_no_import_cycles() -> None:
    assert not cycles(), cycles()


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "generation" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "generation"


def test_checker_flags_an_upward_type_only_import(tmp_path: Path) -> None:
    # Negative control: the same checker must catch what it is for, including an import under TYPE_CHECKING.
    files = {name.replace(".", "/") + ".py": "" for name in ORDER if name and name != "render"}
    files["__init__.py"] = ""
    files["render/__init__.py"] = ""
    files["render/deform.py"] = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from generation.render.rig import FaceRig\n"
    )
    root = _write(tmp_path, files)
    problems = violations(root)
    assert len(problems) == 1 and "render.deform" in problems[0] and "render.rig" in problems[0], problems
    assert cycles(root) == []


def test_checker_finds_a_cycle_and_unplaced_module(tmp_path: Path) -> None:
    files = {name.replace(".", "/") + ".py": "" for name in ORDER if name and name != "render"}
    files["__init__.py"] = ""
    files["render/__init__.py"] = ""
    files["render/rig.py"] = "from generation.render import closing\n"
    files["render/closing.py"] = "def f():\n    from . import rig\n"
    files["extra.py"] = "import generation.face\n"
    root = _write(tmp_path, files)
    problems = violations(root)
    assert any("generation.render.rig (render) imports generation.render.closing" in p for p in problems), problems
    assert any("generation.extra" in p and "not placed" in p for p in problems), problems
    assert cycles(root) == [["render.closing", "render.rig"]]


def test_every_placed_module_exists() -> None:
    missing = sorted(set(ORDER) - set(all_modules()))
    assert not missing, f"in ORDER but not in generation/: {missing}"
