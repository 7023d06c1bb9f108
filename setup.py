"""Builds pyllm and its C core (csrc/) through cffi; metadata lives in pyproject.toml."""
from setuptools import setup

setup(cffi_modules=["pyllm/_build.py:ffibuilder"])
