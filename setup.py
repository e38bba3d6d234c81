"""Builds the compiled core of the driver (Cython).

Everything else (metadata, dependencies) lives in pyproject.toml.  The client
never links against libdqlite: only the node host loads it, at run time.
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension("dqlite._protocol", ["dqlite/_protocol.pyx"]),
    Extension("dqlite._sockio", ["dqlite/_sockio.pyx"]),
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
    ),
)
