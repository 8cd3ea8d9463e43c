"""Install sets match the wings: the worker needs neither scikit-learn nor matplotlib, and a
built wheel carries what ``detector kafka start`` reads (not only a clone does)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_worker_imports_no_training_library() -> None:
    code = (
        "import sys\n"
        "import detector.cli, detector.stream.worker, detector.stream.app\n"
        "from detector.config import Settings\n"
        "Settings(model_dir=__import__('pathlib').Path('models/default')).load_model()\n"
        "bad = sorted(m for m in ('sklearn', 'matplotlib', 'scipy') if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "", f"the worker's imports pull in {out.stdout.strip()}"


def test_base_dependencies_leave_training_to_the_train_extra() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"])
    assert "scikit-learn" not in base and "matplotlib" not in base
    extras = project["optional-dependencies"]
    assert any("scikit-learn" in d for d in extras["train"])
    assert any("[train]" in d for d in extras["dev"])  # the fast tests need the offline wing


def test_the_wheel_ships_the_local_broker_files(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("pom.xml", "server.properties.template", "log4j.properties", "log4j2.properties"):
        assert f"detector/local/broker_files/{name}" in names, name
    assert "detector/stream/app.py" in names and "detector/offline/simulate/world.py" in names
