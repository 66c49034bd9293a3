"""The console entry point ``particleflow``.

It imports the CLI inside a guard: loading numba and compiling nothing yet still takes
about half a second, and Ctrl-C during it should exit 130 with one line, not print
Python's traceback.  That is why the import below is inside the function (the package's
top level loads its subpackages lazily, so importing this module is cheap).
"""
import sys


def main(argv=None):
    try:
        from .cli import main as cli_main  # inside the guard on purpose: see the module docstring
    except KeyboardInterrupt:
        sys.stderr.write("interrupted before the run started; nothing was written\n")
        sys.exit(130)
    return cli_main(argv)


if __name__ == "__main__":
    main()
