"""The package surface a newcomer meets: the README's quickstart runs, submodules load lazily."""

import re
import subprocess
import sys

import pytest
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_readme_quickstart_runs(tmp_path):
    text = (REPO / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    script = "import matplotlib\nmatplotlib.use('Agg')\n" + code + "\nprint('quickstart ok')\n"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "quickstart ok" in proc.stdout


def test_readme_your_own_stn_runs(tmp_path):
    """README's "Your own STN": the PyTorch tutorial's Net, as written there, trained by fit, recorded
    and written as a GIF (issue 23 item 1)."""
    from PIL import Image

    section = (REPO / "README.md").read_text().split("## Your own STN", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "training in the contiguous layout" in proc.stdout  # the tutorial's .view met channels_last
    assert "theta_5" in proc.stdout  # the table printed
    with Image.open(tmp_path / "my_stn.gif") as gif:
        assert gif.n_frames == 7  # steps 0, 8, ..., 48
    shown = re.search(r"!\[[^]]*\]\(([^)]+\.gif)\)", section).group(1)
    assert (REPO / shown).is_file(), f"the section shows {shown}, which is not in the repository"


def test_submodules_are_lazy_attributes():
    code = (
        "import sys, stnviz\n"
        "assert 'stnviz.widgets' not in sys.modules\n"
        "assert stnviz.widgets.ThetaExplorer and stnviz.data.sample and stnviz.render.plot_batch\n"
        "try:\n    stnviz.no_such_thing\nexcept AttributeError as e:\n    print(e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "has no attribute 'no_such_thing'" in proc.stdout


def test_dependencies_a_user_expects(tmp_path):
    """The core install pulls in nothing Jupyter-server-side; each make target installs its own extra."""
    import subprocess
    import tomllib

    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = " ".join(meta["dependencies"])
    assert "jupyterlab" not in core and "voila" not in core and "pytest" not in core
    extras = meta["optional-dependencies"]
    assert any(d.startswith("voila") for d in extras["dashboard"]) and any(d.startswith("jupyterlab") for d in extras["lab"])
    venv = tmp_path / "venv"  # a fresh venv path: make prints the install recipe (-n: nothing runs)
    for target, extra in (("demo", '"."'), ("lab", '".[lab]"'), ("dashboard", '".[dashboard]"'), ("test", '".[test]"')):
        out = subprocess.run(["make", "-n", "-C", str(REPO), target, f"VENV={venv}", "STNVIZ_TOKEN=x"],
                             capture_output=True, text=True, timeout=60).stdout
        installs = [ln for ln in out.splitlines() if "pip install -e" in ln]
        assert installs and installs[0].endswith(extra), (target, installs)


def test_notebooks_import_only_public_names():
    """Notebooks are what users copy: every name they import from stnviz is in that module's __all__."""
    import importlib
    import json

    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        for module, names in re.findall(r"^from (stnviz[\w.]*) import ([^\n(]+)$", code, flags=re.M):
            public = set(getattr(importlib.import_module(module), "__all__", ()))
            for name in (n.strip().split(" as ")[0] for n in names.split(",")):
                assert name in public, f"{nb.name} imports {name!r} from {module}, which is not in its __all__"


PUBLIC_MODULES = ["stnviz", "stnviz.geometry", "stnviz.capture", "stnviz.render", "stnviz.analysis", "stnviz.animate",
                  "stnviz.widgets", "stnviz.train", "stnviz.checkpoints", "stnviz.hub", "stnviz.device", "stnviz.cli",
                  "stnviz.demo", "stnviz.models", "stnviz.data", "stnviz.diagnose", "stnviz.integrations"]


def _defined_public(module) -> set[str]:
    """Public functions and classes ``module`` defines itself (not imported, not aliases)."""
    import inspect

    return {n for n, obj in vars(module).items()
            if not n.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
            and obj.__module__ == module.__name__ and obj.__name__ == n}


def _public_surface(mod) -> set[str]:
    """What a module offers: the public functions and classes it defines; for a package, also those
    of its public submodules (``stnviz.models.fcn.stn_fcn_tps`` belongs in ``stnviz.models.__all__``)."""
    import importlib
    import pkgutil

    names = _defined_public(mod)
    for info in pkgutil.iter_modules(getattr(mod, "__path__", [])):
        if not info.name.startswith("_"):
            names |= _defined_public(importlib.import_module(f"{mod.__name__}.{info.name}"))
    return names


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_lists_the_public_surface(name):
    """__all__ holds no private helper (nor one merely imported from elsewhere), and every public
    function or class a module defines is in it; a package's __all__ also holds every public
    function or class its public submodules define (``stnviz`` itself: what it defines; its
    submodules are reached as attributes, ``stnviz.render.plot_batch``)."""
    import importlib
    import inspect

    mod = importlib.import_module(name)
    listed = set(mod.__all__)
    for n in listed:
        assert not n.startswith("_") or n == "__version__", f"{name}.__all__ lists private {n!r}"
        obj = getattr(mod, n)  # every listed name resolves
        if not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.ismodule(obj)):
            continue  # constants have no home to check
        home = obj.__name__ if inspect.ismodule(obj) else obj.__module__
        assert home.startswith("stnviz"), f"{name}.__all__ lists {n!r} from {home}"
        assert not any(part.startswith("_") for part in home.split(".")[1:]), f"{name}.__all__ re-exports private {home}.{n}"
    missing = (_defined_public(mod) if name == "stnviz" else _public_surface(mod)) - listed
    assert not missing, f"public but missing from {name}.__all__: {sorted(missing)}"


# Issue 19 ("a house a newcomer can carry on"): no file under stnviz/ over 600 lines, except geometry.py
# (one module of pure tensor functions, read by its sections).
def test_no_source_file_is_too_long():
    lines = {p.relative_to(REPO).as_posix(): len(p.read_text().splitlines()) for p in (REPO / "stnviz").rglob("*.py")}
    too_long = {p: n for p, n in lines.items() if n > 600 and p != "stnviz/geometry.py"}
    assert not too_long, f"over 600 lines (split by idea, as stnviz/capture/ and stnviz/train/ are): {too_long}"


def test_every_package_is_installed():
    """pyproject's package list names every folder of stnviz/ that holds an __init__.py (a package
    left off is missing from a non-editable install), and nothing else."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "stnviz").rglob("__init__.py")}
    found.add("stnviz.weights")  # the top-level weights/ folder, installed under that name (package-dir)
    assert (REPO / "weights" / "__init__.py").is_file()
    assert listed == found, f"pyproject lists {sorted(listed - found)} that are not packages, misses {sorted(found - listed)}"


#: Values Python may share between unrelated names (interned strings, small numbers, constant
#: tuples folded by the compiler): two names holding one of these are not an alias.
_SHAREABLE = (bool, int, float, complex, str, bytes, type(None), tuple, frozenset)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_no_aliases_in_all(name):
    """One word per idea: no two names in a public module's __all__ are the same object (a synonym
    such as ``to_png`` beside ``encode``, or ``build_model`` beside ``get_model``)."""
    import importlib

    mod = importlib.import_module(name)
    by_object: dict[int, list[str]] = {}
    for n in mod.__all__:
        obj = getattr(mod, n)
        if not isinstance(obj, _SHAREABLE):
            by_object.setdefault(id(obj), []).append(n)
    aliases = sorted(sorted(names) for names in by_object.values() if len(names) > 1)
    assert not aliases, f"{name}.__all__ names one object twice: {aliases}"
