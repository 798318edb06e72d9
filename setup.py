"""Ship the lab data with the package: a built wheel carries labs/, graders/, kind/ and the
notebooks as ckalab/_data/, where ckalab.labs.data_root() finds them when there is no checkout.

An editable install reads them from the checkout instead, so nothing is copied for it.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DATA = ("labs", "graders", "kind", "notebooks")


class BuildWithLabData(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        here = Path(__file__).resolve().parent
        target = Path(self.build_lib) / "ckalab" / "_data"
        for name in DATA:
            shutil.rmtree(target / name, ignore_errors=True)
            shutil.copytree(here / name, target / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*", "_source"))


setup(cmdclass={"build_py": BuildWithLabData})
