"""``--sample FILE``: a few input rows read from a file, for commands that record a verification sample.

``.npy`` is read by numpy without pickle; ``.csv`` (a header row names the columns) and
``.parquet`` by pandas (parquet through pyarrow), as DataFrames, so the input schema records
the column names and dtypes. Nothing else is accepted: the kind is told by the suffix, and a
file that does not parse as that kind is a usage error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

__all__ = ["read_sample", "SAMPLE_SUFFIXES"]

#: Suffix -> what reads it (named in messages).
SAMPLE_SUFFIXES = {".npy": "numpy", ".csv": "pandas", ".parquet": "pandas and pyarrow", ".pq": "pandas and pyarrow"}


def read_sample(path: str, param: str = "--sample") -> Any:
    """The rows in ``path`` (.npy -> ndarray; .csv/.parquet -> DataFrame); click.BadParameter when unreadable."""
    suffix = Path(path).suffix.lower()
    if suffix not in SAMPLE_SUFFIXES:
        raise click.BadParameter(f"{path!r} is not a sample file modelsafe reads: expected one of "
                                 f"{', '.join(SAMPLE_SUFFIXES)} (told by the suffix). Save a few input rows with "
                                 "numpy.save, DataFrame.to_csv or DataFrame.to_parquet.", param_hint=param)
    try:
        if suffix == ".npy":
            import numpy as np

            return np.load(path, allow_pickle=False)
        import pandas as pd

        return pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    except ImportError as exc:
        raise click.BadParameter(f"reading {path!r} needs {SAMPLE_SUFFIXES[suffix]} ({exc}). Install them with: "
                                 "pip install pandas pyarrow", param_hint=param) from exc
    except (OSError, ValueError) as exc:  # numpy, pandas and pyarrow parse errors are ValueErrors
        raise click.BadParameter(f"cannot read {path!r} as {suffix} ({type(exc).__name__}: {exc}). Check the file; "
                                 "an .npy must not hold Python objects (it is read without pickle).",
                                 param_hint=param) from exc
