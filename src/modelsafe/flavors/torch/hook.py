"""Record torch modules' constructor arguments from the moment torch is imported.

The PyTorch flavor stores a module's architecture as its class plus the arguments it was
built with; :func:`modelsafe.flavors.torch.args.install_recorder` remembers those
arguments for every module built after it runs. ``import modelsafe`` imports no
framework, so :func:`arm` installs the recorder at once when torch is already imported,
and otherwise adds a one-shot import hook that installs it right after ``import torch``
has finished, whatever the order of the user's imports. The hook only observes: it finds
torch exactly as Python would, removes itself on first use, and a failure to install the
recorder never affects the import.
"""

from __future__ import annotations

import sys


def _install() -> None:
    try:
        from modelsafe.flavors.torch.args import install_recorder

        install_recorder()
    except Exception:  # noqa: BLE001 - recording is a convenience; init_args= still works
        pass


class _AfterTorchImport:
    """A meta-path finder that defers to the normal finders for ``torch``, then runs :func:`_install`."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> object:
        if fullname != "torch":
            return None
        _disarm()
        from importlib.util import find_spec

        spec = find_spec(fullname)
        loader = getattr(spec, "loader", None)
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None:
            return spec

        def exec_then_install(module: object) -> None:
            exec_module(module)
            _install()

        loader.exec_module = exec_then_install  # type: ignore[union-attr]
        return spec


_HOOK = _AfterTorchImport()


def _disarm() -> None:
    if _HOOK in sys.meta_path:
        sys.meta_path.remove(_HOOK)


def arm() -> None:
    """Install the recorder now if torch is imported, else right after torch is imported."""
    if "torch" in sys.modules:
        _install()
    elif _HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _HOOK)
