"""What the project wrote: the folders ``--dev reload`` watches and what a change to a file does.

A project is more than the package its WSGI callable lives in: a Django project imports the
settings package (``mysite/``) and its apps beside it (``shop/``); a Flask factory imports its
blueprints. So the folders watched come from what the app *imported*: every module in
``sys.modules`` whose file is not part of the interpreter's library or an installed
distribution (site-packages, dist-packages, a virtualenv) gives the folder of its top-level
package (a lone module: its own folder). Modules imported later (on a first request) add
their folders when they appear (:func:`module_roots` is cheap enough to run again).

Not only Python files count: templates, translations and config files are read by the app
too (:data:`DEFAULT_INCLUDE`). What a change does depends on the file:

* under a ``static`` folder (or a framework's static folder): nothing, the file is served
  from disk as it is;
* a template or translation a framework re-reads by itself: nothing more (see
  :mod:`devserve.frameworks`);
* anything else: a reload, after the syntax check.
"""

from __future__ import annotations

import functools
import os
import site
import sys
import sysconfig
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devserve.config import Settings

__all__ = [
    "CONFIG_FILES",
    "DEFAULT_INCLUDE",
    "collapse",
    "config_files",
    "inside",
    "is_library",
    "is_static",
    "module_roots",
    "roots",
]

# Files whose change counts, on top of --reload-include: code, templates (Django, Jinja,
# Bottle, Mako, Chameleon; any file under a templates folder), compiled translations and
# config files.
TEMPLATE_INCLUDE = (
    *("*.html", "*.jinja", "*.jinja2", "*.j2", "*.tpl", "*.mako", "*.pt"),
    *("templates/*", "*/templates/*"),
)
CONFIG_FILES = (".env", "*.toml", "*.ini", "*.cfg", "*.yaml", "*.yml")
DEFAULT_INCLUDE = ("*.py", *TEMPLATE_INCLUDE, "*.mo", *CONFIG_FILES)
STATIC_FOLDER = "static"  # a file under a folder of this name is served, never reloaded
_DEVSERVE = os.path.dirname(os.path.abspath(__file__))
# Debuggers an IDE loads from its own folders (VS Code's debugpy, PyCharm's pydevd).
_TOOLS = ("debugpy", "pydev", "_pydev")
_LIBRARY_PARTS = frozenset({"site-packages", "dist-packages"})


@functools.lru_cache(maxsize=1)
def _library_folders() -> tuple[str, ...]:
    """The interpreter's library and where distributions are installed, for this
    interpreter and the one a virtualenv is based on."""
    folders = set(site.getsitepackages())
    with_user = site.getusersitepackages()
    if isinstance(with_user, str):
        folders.add(with_user)
    bases = [{}, {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}]
    for base in bases:
        paths = sysconfig.get_paths(vars=base)
        folders.update(paths[name] for name in ("stdlib", "platstdlib", "purelib", "platlib"))
    return tuple(sorted({os.path.realpath(folder) for folder in folders if folder}))


def is_library(path: str) -> bool:
    """Whether ``path`` belongs to the interpreter's library, an installed distribution or
    devserve itself: nothing a project's developer edits."""
    real = os.path.realpath(path)
    if _LIBRARY_PARTS.intersection(real.split(os.sep)):
        return True
    return any(real == folder or real.startswith(folder + os.sep) for folder in _library_folders())


def _module_root(name: str, module: object) -> str | None:
    """The folder of a module's top-level package (a lone module: the folder it is in).
    Read from the module's namespace: a module's own ``__getattr__`` never runs."""
    if not isinstance(module, ModuleType) or name.startswith(_TOOLS):
        return None  # not a module (some libraries put other objects in sys.modules)
    namespace = vars(module)
    path = namespace.get("__file__")
    if not isinstance(path, str) or not os.path.isabs(path):
        return None  # built in, frozen, or a namespace package
    parts = name.split(".")
    folder = os.path.dirname(path)
    is_package = "__path__" in namespace
    if len(parts) == 1 and not is_package:
        return folder  # a top-level module: its folder holds the project
    for _ in range(len(parts) - (1 if is_package else 2)):
        folder = os.path.dirname(folder)
    # Imported under another name (devserve's addons namespace): the module's own folder.
    return folder if os.path.basename(folder) == parts[0] else os.path.dirname(path)


def module_roots(modules: Mapping[str, object] | None = None) -> list[str]:
    """The folders holding the project's imported modules: not the library's, not
    devserve's, not ``__main__`` (the script that started the interpreter)."""
    modules = sys.modules if modules is None else modules
    main = modules.get("__main__")  # also known as __mp_main__ once multiprocessing is in
    roots = set()
    for name, module in list(modules.items()):
        if module is main:
            continue
        root = _module_root(name, module)
        if root is not None:
            roots.add(root)
    return collapse(root for root in roots if not _is_devserve(root) and not is_library(root))


def roots(settings: Settings, given: object = None) -> list[str]:
    """The project's folders: the addons paths; for an app object handed to
    ``devserve.run()``, the folder of the script that runs; for ``module:attribute``, the
    folder of its top-level package (found without importing it: the app may be broken);
    then the folders of every module the app imported (:func:`module_roots`)."""
    found = list(settings.addons_path)
    if given is not None:
        script = getattr(sys.modules.get("__main__"), "__file__", None)
        found.append(os.path.dirname(os.path.abspath(script)) if script else os.getcwd())
    if settings.app:
        found += _spec_roots(settings.app)
    return collapse([*found, *module_roots()])


def _spec_roots(spec: str) -> list[str]:
    """The folder of the top-level package of ``module:attribute`` (the module's own
    folder for a lone module; the current folder when it cannot be found)."""
    import importlib.util

    from devserve.app import current_folder_importable

    top_level = spec.partition(":")[0].split(".")[0]
    cwd = current_folder_importable()
    try:
        found = importlib.util.find_spec(top_level)
    except (ImportError, ValueError):
        return [cwd]
    if found is not None and found.submodule_search_locations:
        return list(found.submodule_search_locations)
    if found is not None and found.origin and os.path.isfile(found.origin):
        return [os.path.dirname(found.origin)]
    return [cwd]


def _is_devserve(folder: str) -> bool:
    return folder == _DEVSERVE or folder.startswith(_DEVSERVE + os.sep)


def collapse(folders: Iterable[str]) -> list[str]:
    """The folders, each once, without those inside another one of them, in the order
    given (first seen first)."""
    unique = list(dict.fromkeys(os.path.abspath(folder) for folder in folders))
    return [folder for folder in unique if not any(inside(folder, other) for other in unique)]


def config_files(folders: Iterable[str]) -> list[str]:
    """The config files right in ``folders`` (the project folders holding the packages):
    ``.env`` (watched even before it exists), ``*.toml``, ``*.ini``, ``*.cfg``, ``*.yaml``."""
    import fnmatch

    found = []
    for folder in dict.fromkeys(folders):
        found.append(os.path.join(folder, ".env"))
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        found += [
            os.path.join(folder, name)
            for name in names
            if any(fnmatch.fnmatch(name, pattern) for pattern in CONFIG_FILES[1:])
            and os.path.isfile(os.path.join(folder, name))
        ]
    return list(dict.fromkeys(found))


def inside(path: str, folder: str) -> bool:
    """Whether ``path`` is below ``folder``."""
    return path.startswith(folder.rstrip(os.sep) + os.sep)


def is_static(path: str, roots: Iterable[str], static_folders: Iterable[str] = ()) -> bool:
    """Whether a changed file is a static file: under a folder named ``static`` below the
    watched root it is in, or under one of the framework's ``static_folders``."""
    if any(inside(path, folder) for folder in static_folders):
        return True
    containing = [root for root in roots if inside(path, root)]
    if not containing:
        return False
    relative = path[len(max(containing, key=len).rstrip(os.sep)) + 1 :]
    return STATIC_FOLDER in relative.split(os.sep)[:-1]
