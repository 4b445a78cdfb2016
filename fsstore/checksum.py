"""CRC-32C, the checksum of every fsstore file (docs/FORMAT.md), from the crc32c package.

The function is loaded from the package's compiled extension directly. Importing the
package itself runs its ``__init__``, which imports ``importlib.metadata`` to look up its
own version and its command-line module (argparse): about 18 ms, as long as everything
else ``fsstore cat`` does on a small session, and paid by every command git runs per
file. Where the extension cannot be found that way (another layout of the package, a
frozen program), the package is imported as usual: the function is the same.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any


def _load() -> Any:
    import importlib.machinery
    import importlib.util
    import os

    name = "crc32c._crc32c"
    try:
        found = sys.modules.get(name)
        if found is None:
            package = importlib.util.find_spec("crc32c")  # finds it, does not run it
            folders = package.submodule_search_locations if package is not None else None
            for folder in folders or ():
                for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                    path = os.path.join(folder, "_crc32c" + suffix)
                    if os.path.isfile(path):
                        loader = importlib.machinery.ExtensionFileLoader(name, path)
                        spec = importlib.util.spec_from_file_location(name, path,
                                                                      loader=loader)
                        if spec is None:
                            continue
                        found = importlib.util.module_from_spec(spec)
                        loader.exec_module(found)
                        # an `import crc32c` later finds its extension already loaded
                        sys.modules.setdefault(name, found)
                        break
                if found is not None:
                    break
        if found is not None:
            return found.crc32c
    except (ImportError, OSError, AttributeError, ValueError):
        pass  # ValueError: find_spec of a crc32c in sys.modules without a __spec__
    from crc32c import crc32c as function

    return function


if TYPE_CHECKING:
    from crc32c import crc32c as crc32c
else:
    crc32c = _load()

__all__ = ["crc32c"]
