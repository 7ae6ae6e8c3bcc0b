"""The package surface a newcomer meets: the README's quickstart runs, submodules load lazily."""

import re
import subprocess
import sys
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
