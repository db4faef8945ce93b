"""Packaging invariants, checked without installing anything: a non-editable install
(``pip install git+...``, as on Colab) ships every subpackage of ``pclib``, and every runtime
dependency is also in requirements.txt."""

import fnmatch
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _packages() -> list[str]:
    """Dotted names of every directory under pclib/ (itself included) with an __init__.py."""
    return sorted(".".join(init.parent.relative_to(ROOT).parts)
                  for init in (ROOT / "pclib").rglob("__init__.py"))


def test_package_discovery_includes_every_subpackage():
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert "packages" not in setuptools or isinstance(setuptools["packages"], dict), (
        "an explicit [tool.setuptools] packages list leaves new subpackages out of an install")
    find = setuptools["packages"]["find"]
    include, exclude = find.get("include", ["*"]), find.get("exclude", [])
    packages = _packages()
    assert {"pclib", "pclib.data"} <= set(packages)
    for name in packages:
        # setuptools' find_packages matches dotted names with fnmatch, case-sensitively
        assert any(fnmatch.fnmatchcase(name, pat) for pat in include), f"{name} not included"
        assert not any(fnmatch.fnmatchcase(name, pat) for pat in exclude), f"{name} excluded"


def test_runtime_dependencies_are_in_requirements():
    def name(spec: str) -> str:
        return re.split(r"[<>=!~;\[ ]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")

    required = {name(line) for line in (ROOT / "requirements.txt").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")}
    for dep in PYPROJECT["project"]["dependencies"]:
        assert name(dep) in required, f"{dep} is a dependency but not in requirements.txt"
