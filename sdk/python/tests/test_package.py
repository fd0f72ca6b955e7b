# SPDX-License-Identifier: MIT
"""The package as published: MIT, the protocol version as its major version,
no run-time dependency, the typing marker shipped."""
import pathlib
import tomllib

import presenced

HERE = pathlib.Path(__file__).resolve().parents[1]


def test_pyproject():
    meta = tomllib.loads((HERE / "pyproject.toml").read_text())["project"]
    assert meta["name"] == "presenced"
    assert meta["version"] == presenced.__version__
    assert int(meta["version"].split(".")[0]) == presenced.PROTOCOL_VERSION
    assert meta["license"] == {"text": "MIT"}
    assert meta["dependencies"] == []
    assert (HERE / "presenced" / "py.typed").exists() and (HERE / "LICENSE").exists()
