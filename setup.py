"""Package discovery for the three mapped folders (DESIGN §1).

pyproject.toml holds the metadata and the ``package-dir`` mapping; setuptools' own
``packages.find`` cannot rename folders, so every subpackage is discovered here instead of
being listed by hand: a folder with an ``__init__.py`` under ``edge/``, ``convert/`` or
``calibration/`` is in the wheel without anyone remembering to add it.
"""

from setuptools import find_packages, setup

ROOTS = {
    "edge_mer": "edge",
    "edge_mer.convert": "convert",
    "edge_mer.calibration": "calibration",
    "edge_mer.systemd": "systemd",
}

packages = []
for name, folder in ROOTS.items():
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=ROOTS)
