"""TOML run configs: schema, validation and ``--set`` overrides.

Every config is validated before anything runs.  An unknown key names the closest
valid one and lists them all; a wrong type or an out-of-range value names the key and
the allowed range.  Errors are ``ConfigError`` (a ``ValueError``), which the CLI turns
into one line and exit code 2.

The ``sample`` estimator (the engine's generic sampler, used by ``runs/demo.toml``)::

    estimator = "sample"
    [run]        steps, seed, dtype
    [output]     every, checkpoint_every, compression, plot
    [energy]     kind = "gaussian" (mean, precision) | "gaussian_mixture"
                 (means or ring_components/ring_radius, scale or covariances, weights)
    [ensembles.<name>]  n, init = "normal" | "zeros" | "file", init_scale, file
    [[schedule]] move = langevin | mala | hmc | resample | restart, ensemble, every, ...
"""
import difflib
import importlib
import math
import numbers
import tomllib


class ConfigError(ValueError):
    pass


REQUIRED = object()


class Field:
    def __init__(self, kind, default=REQUIRED, lo=None, hi=None, lo_open=False, choices=None):
        self.kind, self.default, self.lo, self.hi = kind, default, lo, hi
        self.lo_open, self.choices = lo_open, choices

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


def _positive(default=REQUIRED):
    return Field("float", default, lo=0, lo_open=True)


RUN = {"steps": Field("int", REQUIRED, lo=1, hi=2 ** 32 - 1),
       "seed": Field("int", 0, lo=0, hi=2 ** 32 - 1),
       "dtype": Field("str", "float64", choices=("float32", "float64"))}
OUTPUT = {"every": Field("int", 10, lo=1), "checkpoint_every": Field("int", 1000, lo=1),
          "compression": Field("str", "none", choices=("none", "lzf", "gzip")),
          "plot": Field("bool", True)}
ENERGY = {"kind": Field("str", REQUIRED, choices=("gaussian", "gaussian_mixture")),
          "mean": Field("list", None), "precision": Field("list", None),
          "means": Field("list", None), "ring_components": Field("int", None, lo=1),
          "ring_radius": _positive(None), "scale": Field("float", None, lo=0, lo_open=True),
          "covariances": Field("list", None), "weights": Field("list", None)}
ENSEMBLE = {"n": Field("int", REQUIRED, lo=1), "init": Field("str", "normal", choices=("normal", "zeros", "file")),
            "init_scale": _positive(1.0), "file": Field("str", None), "dim": Field("int", None, lo=1)}
MOVES = {
    "langevin": {"step_size": _positive(), "temperature": _positive(1.0),
                 "noise_scale": Field("float", None, lo=0)},
    "mala": {"step_size": _positive()},
    "hmc": {"step_size": _positive(), "n_leapfrog": Field("int", REQUIRED, lo=1),
            "mass": Field("float", None, lo=0, lo_open=True)},
    "resample": {"scheme": Field("str", "systematic", choices=("multinomial", "residual", "stratified", "systematic")),
                 "ess_threshold": Field("float", None, lo=0, lo_open=True, hi=1)},
    "restart": {"source": Field("str", REQUIRED), "probability": Field("float", REQUIRED, lo=0, hi=1)},
}
SLOT = {"move": Field("str", REQUIRED, choices=tuple(MOVES)), "ensemble": Field("str", REQUIRED),
        "every": Field("int", 1, lo=1), "name": Field("str", None)}
# estimators other than the generic sampler: config key -> module with validate /
# execute / summary / plot (particleflow/estimators/*_run.py)
ESTIMATOR_MODULES = {"importance_ml": "particleflow.estimators.importance_run",
                     "dual_ebm": "particleflow.estimators.dual_ebm_run"}
TOP = {"estimator": Field("str", "sample", choices=("sample",) + tuple(ESTIMATOR_MODULES)), "run": Field("table", REQUIRED),
       "output": Field("table", {}), "energy": Field("table", REQUIRED),
       "ensembles": Field("table", REQUIRED), "schedule": Field("list", REQUIRED)}


def _table(where, d, schema):
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


def estimator_module(name):
    """The module running estimator ``name`` (None for the generic ``sample``)."""
    return None if name == "sample" else importlib.import_module(ESTIMATOR_MODULES[name])


def validate(cfg):
    """Validated config with defaults filled in, or ``ConfigError``."""
    if not isinstance(cfg, dict):
        raise ConfigError("the config must be a table")
    est = TOP["estimator"].check("estimator", cfg.get("estimator", "sample"))
    if est != "sample":
        return estimator_module(est).validate(cfg)
    top = _table("", cfg, TOP)
    top["run"] = _table("run", top["run"], RUN)
    top["output"] = _table("output", top["output"], OUTPUT)
    e = top["energy"] = _table("energy", top["energy"], ENERGY)
    if e["kind"] == "gaussian" and (e["mean"] is None or e["precision"] is None):
        raise ConfigError("energy.kind = 'gaussian' needs energy.mean and energy.precision")
    if e["kind"] == "gaussian_mixture" and (e["means"] is None) == (e["ring_components"] is None):
        raise ConfigError("energy.kind = 'gaussian_mixture' needs exactly one of energy.means "
                          "or energy.ring_components (with energy.ring_radius)")
    if not top["ensembles"]:
        raise ConfigError("ensembles must define at least one ensemble, e.g. [ensembles.chains] n = 1000")
    ens = {}
    for name, t in top["ensembles"].items():
        ens[name] = _table(f"ensembles.{name}", t, ENSEMBLE)
        if ens[name]["init"] == "file" and not ens[name]["file"]:
            raise ConfigError(f"ensembles.{name}.init = 'file' needs ensembles.{name}.file (a .npy array)")
    top["ensembles"] = ens
    if not top["schedule"]:
        raise ConfigError("schedule must list at least one move ([[schedule]] move = ...)")
    slots = []
    for i, s in enumerate(top["schedule"]):
        where = f"schedule[{i}]"
        if not isinstance(s, dict) or "move" not in s:
            raise ConfigError(f"{where} must be a table with a 'move' key (one of {', '.join(MOVES)})")
        kind = SLOT["move"].check(f"{where}.move", s["move"])
        slot = _table(where, s, SLOT | MOVES[kind])
        if slot["ensemble"] not in ens:
            raise ConfigError(f"{where}.ensemble = {slot['ensemble']!r} is not defined; "
                              f"ensembles: {', '.join(ens)}")
        if kind == "restart" and slot["source"] not in ens:
            raise ConfigError(f"{where}.source = {slot['source']!r} is not defined; ensembles: {', '.join(ens)}")
        slots.append(slot)
    top["schedule"] = slots
    return top


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
    node = cfg
    parts = key.split(".")
    for p in parts[:-1]:
        if p.isdigit() and isinstance(node, list):
            node = node[int(p)]
            continue
        node = node.setdefault(p, {})
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"--set {key}: {p!r} is not a table")
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = v
    else:
        node[last] = v
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
