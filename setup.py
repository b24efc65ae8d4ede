"""Builds the one C extension, manygil._native (process-wide channels, blocks, locks)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "manygil._native",
            sources=["src/manygil/_native.c", "src/manygil/_copier.c"],
            depends=["src/manygil/_copier.h"],
            extra_compile_args=["-O2", "-std=c11", "-Wall"],
        )
    ]
)
