"""The configuration reference (``docs/configs.md``), generated from the experiments'
schema declarations: ``python -m particleflow.experiments.reference > docs/configs.md``
(a test checks that the file is current)."""
from . import REGISTRY

HEADER = """# Configuration reference

Generated from the schema declarations of the experiments
(`python -m particleflow.experiments.reference > docs/configs.md`); a test keeps it current.

A config is a TOML file. `estimator = "<name>"` picks the experiment (default `sample`).
Every key is checked before anything runs: an unknown key gets a "did you mean" and the
list of valid keys, a wrong type or a value out of range names the key and the range, and
the CLI exits with code 2 without touching any file. Any key can be overridden on the
command line with `--set section.key=value` (the value is parsed as TOML). Any config may
add a `[sweep]` table, `"section.key" = [v1, v2, ...]`: the run is repeated once per
combination of values, each into `<out stem>_<key>=<value>.h5`.

Types: `int`, `float`, `str`, `bool`, `list` (a TOML array), `table`. Ranges are inclusive
unless marked `>`.
"""


def _table(fields):
    lines = ["| key | type | range / choices | default | meaning |", "|---|---|---|---|---|"]
    for k, f in fields.items():
        kind, rng, default = f.describe()
        lines.append(f"| `{k}` | {kind} | {rng.replace('|', '/') or '-'} | {default} | {f.doc} |")
    return lines


def markdown():
    out = [HEADER]
    for name, exp in REGISTRY.items():
        out.append(f"## `estimator = \"{name}\"`\n\n{exp.description}.\n")
        for sec, fields in exp.sections.items():
            req = " (required)" if sec in exp.required else ""
            out.append(f"### `[{sec}]`{req}\n")
            out.extend(_table(fields))
            out.append("")
        for key, f in exp.free.items():
            out.append(f"### `{key}`\n\n{f.doc}.\n")
        for where, fields in getattr(exp, "tables", {}).items():
            out.append(f"### `{where}`\n")
            out.extend(_table(fields))
            out.append("")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
