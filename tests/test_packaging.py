"""A non-editable install carries saved_policies/ inside the package."""

import pathlib
import subprocess
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_wheel_ships_saved_policies(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path), str(ROOT)],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("keras_lopt-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        "keras_lopt/saved_policies/" + path.relative_to(ROOT / "saved_policies").as_posix()
        for path in (ROOT / "saved_policies").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    # A policy's TF-Agents PolicySaver copy stays in the repository, for the training side.
    training_side = {name for name in shipped if "/tf_agents_policy/" in name}
    expected = shipped - training_side
    assert "keras_lopt/saved_policies/README.md" in expected
    assert expected <= names
    assert not training_side & names
    assert "keras_lopt/lhopt.py" in names
    # Only the optimizer's own dependencies are required at run time.
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    required = [line for line in text.splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert sorted(r.split()[1].split(">")[0].split("<")[0] for r in required) == ["keras", "tensorflow"]
