"""The hushcc application: the one `hushcc` command and the end-to-end demo.

The top of the house: it imports every component, and nothing in the project imports it except
the `hushcc` entry point (`app.cli:main`) and `python -m app`. What every component shares (the
error types, file and argument-parser helpers) lives in the leaf package `hushcc`, below them all.
"""
