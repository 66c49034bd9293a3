"""Copy the data and reference draws of the benchmark's posteriors out of a posteriordb
checkout (github.com/stan-dev/posteriordb, v1.0) into bench/posteriordb/data/, so that
the benchmark and its tests never download anything:

    python bench/posteriordb/extract.py /path/to/posteriordb

data/<posterior>.json holds the model's data; data/<posterior>.npz the reference draws
(10 chains x 1000 draws per constrained parameter, as posteriordb gives them).
"""
import io
import json
import os
import sys
import zipfile

import numpy as np

POSTERIORS = ["eight_schools-eight_schools_noncentered", "kidiq-kidscore_interaction", "sblrc-blr", "arK-arK",
              "earnings-logearn_height", "low_dim_gauss_mix-low_dim_gauss_mix", "gp_pois_regr-gp_pois_regr",
              "arma-arma11", "mesquite-logmesquite_logvas"]
HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def _zip_json(path):
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read(z.namelist()[0]))


def main(root):
    db = os.path.join(root, "posterior_database")
    for name in POSTERIORS:
        with open(os.path.join(db, "posteriors", name + ".json")) as f:
            info = json.load(f)
        data = _zip_json(os.path.join(db, "data", "data", info["data_name"] + ".json.zip"))
        with open(os.path.join(HERE, name + ".json"), "w") as f:
            json.dump(data, f)
        draws = _zip_json(os.path.join(db, "reference_posteriors", "draws", "draws", name + ".json.zip"))
        arrays = {k: np.array([chain[k] for chain in draws], dtype=np.float64) for k in draws[0]}
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        with open(os.path.join(HERE, name + ".npz"), "wb") as f:
            f.write(buf.getvalue())
        print(name, {k: v.shape for k, v in arrays.items()})


if __name__ == "__main__":
    main(sys.argv[1])
