"""The installed package: version, type stubs, docstrings."""

import importlib.resources
import inspect

import lqer


def test_version_and_stubs_ship_with_the_package():
    assert lqer.__version__ == "0.1.0"
    files = importlib.resources.files("lqer")
    assert files.joinpath("py.typed").is_file()
    stub = files.joinpath("_lqer.pyi").read_text()
    for name in ("class ActivationStats", "class Layer", "def kernel_paths", "def format_names"):
        assert name in stub


def test_every_public_name_is_documented():
    for name in lqer.__all__:
        obj = getattr(lqer, name)
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            continue
        assert (obj.__doc__ or "").strip(), name
    import lqer.torch as lt

    for name in lt.__all__:
        assert (getattr(lt, name).__doc__ or "").strip(), name
