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


def test_every_public_signature_resolves_for_type_checkers():
    # PresenceAPI.events was annotated "EventStream" where that name was not
    # defined: the stream was Any to mypy (an error in the package itself) and
    # typing.get_type_hints() raised NameError.
    import inspect
    import typing
    assert typing.get_type_hints(presenced.PresenceAPI.events)["return"] is presenced.EventStream
    for name in presenced.__all__:
        obj = getattr(presenced, name)
        if not callable(obj):
            continue
        methods = [m for n, m in inspect.getmembers(obj, inspect.isfunction) if not n.startswith("_") or n == "__init__"]
        for fn in [obj, *methods]:
            typing.get_type_hints(fn)
