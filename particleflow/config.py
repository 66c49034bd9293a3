"""TOML run configs: the schema machinery every experiment declares its config with,
the shared ``[run]`` and ``[output]`` sections, validation and ``--set`` overrides.

Every config is validated before anything runs.  An unknown key names the closest
valid one and lists them all; a wrong type or an out-of-range value names the key and
the allowed range.  Errors are ``ConfigError`` (a ``ValueError``), which the CLI turns
into one line and exit code 2.  ``docs/configs.md`` is generated from these
declarations (``particleflow.experiments.reference``).
"""
import difflib
import math
import numbers
import tomllib


class ConfigError(ValueError):
    pass


REQUIRED = object()


class Field:
    """One config key: ``kind`` (int, float, str, bool, list, table), a default
    (``REQUIRED`` for none), an optional range [lo, hi] (``lo_open``: lo excluded),
    allowed ``choices`` and a one-line ``doc``."""

    def __init__(self, kind, default=REQUIRED, lo=None, hi=None, lo_open=False, choices=None, doc=""):
        self.kind, self.default, self.lo, self.hi = kind, default, lo, hi
        self.lo_open, self.choices, self.doc = lo_open, choices, doc

    def describe(self):
        """(type, range or choices, default) as text, for the config reference."""
        rng = ""
        if self.choices is not None:
            rng = " | ".join(map(repr, self.choices))
        elif self.lo is not None or self.hi is not None:
            lo = "" if self.lo is None else f"{'>' if self.lo_open else '>='} {self.lo}"
            hi = "" if self.hi is None else f"<= {self.hi}"
            rng = ", ".join(x for x in (lo, hi) if x)
        if self.default is REQUIRED:
            default = "required"
        elif self.default is None:
            default = "-"
        elif isinstance(self.default, bool):
            default = "true" if self.default else "false"
        else:
            default = repr(self.default)
        return self.kind, rng, default

    def check(self, key, v):
        kinds = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
                 "list": "an array", "table": "a table"}
        ok = {"int": isinstance(v, int) and not isinstance(v, bool),
              "float": isinstance(v, numbers.Real) and not isinstance(v, bool),
              "str": isinstance(v, str), "bool": isinstance(v, bool),
              "list": isinstance(v, list), "table": isinstance(v, dict)}[self.kind]
        if not ok:
            raise ConfigError(f"{key} must be {kinds[self.kind]}; got {v!r}")
        if self.kind == "float" and not math.isfinite(v):
            raise ConfigError(f"{key} must be finite; got {v!r}")
        if self.choices is not None and v not in self.choices:
            raise ConfigError(f"{key} must be one of {', '.join(map(repr, self.choices))}; got {v!r}")
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            rng = f"{'>' if self.lo_open else '>='} {self.lo}" + (f" and <= {self.hi}" if self.hi is not None else "")
            raise ConfigError(f"{key} must be {rng}; got {v!r}")
        if self.hi is not None and v > self.hi:
            raise ConfigError(f"{key} must be <= {self.hi}; got {v!r}")
        return float(v) if self.kind == "float" else v


def positive(default=REQUIRED, doc=""):
    """A float field > 0."""
    return Field("float", default, lo=0, lo_open=True, doc=doc)


SEED = Field("int", 0, lo=0, hi=2 ** 32 - 1, doc="Philox seed: same seed and config, same results bitwise")
DTYPE = Field("str", "float64", choices=("float32", "float64"), doc="floating-point type of the particles")
COMPRESSION = Field("str", "none", choices=("none", "lzf", "gzip"), doc="HDF5 compression of frames")


def run_section(steps=REQUIRED, dtype="float64", steps_doc="steps of the schedule", **extra):
    """The shared ``[run]`` section: steps (``None``: the experiment has no steps key),
    seed, dtype (``None``: no dtype key), plus experiment-specific fields."""
    out = {}
    if steps is not None:
        out["steps"] = Field("int", steps, lo=1, hi=2 ** 32 - 1, doc=steps_doc)
    out["seed"] = SEED
    if dtype is not None:
        out["dtype"] = Field("str", dtype, choices=("float32", "float64"), doc=DTYPE.doc)
    return out | extra


def output_section(every=10, frame_every=None, checkpoint_every=1000, **extra):
    """The shared ``[output]`` section: observable cadence ``every``, frame cadence
    ``frame_every`` (``None``: frames every ``every`` steps, no separate key),
    ``checkpoint_every``, ``compression``, ``plot``."""
    out = {"every": Field("int", every, lo=1, doc="observables are recorded every this many steps")}
    if frame_every is not None:
        out["frame_every"] = Field("int", frame_every, lo=1, doc="positions are written every this many steps")
    out["checkpoint_every"] = Field("int", checkpoint_every, lo=1, doc="a checkpoint every this many steps")
    out["compression"] = COMPRESSION
    out["plot"] = Field("bool", True, doc="draw the run's figure (PNG beside the trajectory) at the end")
    return out | extra


def table(where, d, schema):
    """Validate table ``d`` against ``schema`` (key -> Field); defaults filled in."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where or 'the config'} must be a table")
    for k in d:
        if k not in schema:
            close = difflib.get_close_matches(k, list(schema), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown key {_join(where, k)!r}{hint}; valid keys: {', '.join(schema)}")
    out = {}
    for k, f in schema.items():
        key = _join(where, k)
        if k in d:
            out[k] = f.check(key, d[k])
        elif f.default is REQUIRED:
            raise ConfigError(f"missing required key {key!r}")
        else:
            out[k] = f.default
    return out


def _join(where, k):
    return f"{where}.{k}" if where else k


def loads(text, where="config"):
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where} is not valid TOML: {e}") from None


def apply_overrides(cfg, assignments):
    """Apply ``key.path=value`` strings (value parsed as TOML, else a string)."""
    for a in assignments:
        if "=" not in a:
            raise ConfigError(f"--set expects key=value; got {a!r}")
        key, value = a.split("=", 1)
        try:
            v = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            v = value
        set_path(cfg, key.strip(), v)
    return cfg


def set_path(cfg, key, v):
    """cfg[a][b][c] = v for key "a.b.c" (tables created as needed, list indices allowed)."""
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(f"--set {key!r}: expected a dotted key such as run.steps")
    node = cfg
    for i, p in enumerate(parts):
        where = ".".join(parts[:i + 1])
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not p.isdigit() or int(p) >= len(node):
                raise ConfigError(f"--set {key}: {where!r} is not an element of an array of {len(node)} "
                                  f"(indices 0..{len(node) - 1})")
            if last:
                node[int(p)] = v
            else:
                node = node[int(p)]
        elif isinstance(node, dict):
            if last:
                node[p] = v
            else:
                node = node.setdefault(p, {})
        else:
            raise ConfigError(f"--set {key}: {'.'.join(parts[:i])!r} is a value, not a table")
    return cfg


def dumps(cfg):
    """A small TOML writer for validated configs (tables, arrays, scalars)."""
    lines = []

    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, float):
            return repr(v)
        return str(v)

    def table(prefix, d):
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict) and v is not None
                   and not (isinstance(v, list) and v and isinstance(v[0], dict))}
        if prefix:
            lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {val(v)}" for k, v in scalars.items())
        for k, v in d.items():
            if isinstance(v, dict):
                table(f"{prefix}.{k}" if prefix else k, v)
            elif isinstance(v, list) and v and isinstance(v[0], dict):
                for item in v:
                    lines.append(f"[[{prefix + '.' if prefix else ''}{k}]]")
                    lines.extend(f"{a} = {val(b)}" for a, b in item.items() if b is not None)
    table("", cfg)
    return "\n".join(lines) + "\n"
