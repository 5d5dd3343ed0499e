"""The job registry: job name -> job (a JobFunction), importing a job's module when a name is first looked up."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from pgqueue.enqueuing.options import JobSpec
from pgqueue.exceptions import InvalidJob, UnknownJob

_registry: dict[str, JobSpec] = {}
# Functions that may know a job @job did not register, by its path (the django.tasks backend: a Task there)
_resolvers: list[Callable[[str], JobSpec | None]] = []
_lock = threading.Lock()
J = TypeVar("J", bound=JobSpec)


def register(fn: J) -> J:
    """Add a job under fn.name (again, for the same function: the newer options win)."""
    with _lock:
        existing = _registry.get(fn.name)
        if existing is not None and _code(existing.func) is not _code(fn.func):
            raise InvalidJob(
                f"Two different functions are registered as job {fn.name!r}: {existing.func!r} and {fn.func!r}."
            )
        _registry[fn.name] = fn
    return fn


def add_resolver(resolve: Callable[[str], JobSpec | None]) -> None:
    """Ask `resolve(path)` for a job no @job registered under `path`, once its module is imported."""
    if resolve not in _resolvers:
        _resolvers.append(resolve)


def is_registered(fn: object) -> bool:
    """True if `fn` is the JobFunction registered under its name (what the worker will run)."""
    name = getattr(fn, "name", None)
    return isinstance(name, str) and _registry.get(name) is fn


def get(path: str) -> JobSpec:
    """The job registered under `path`, importing its module if needed."""
    if not isinstance(path, str):
        raise UnknownJob(f"A job name is a string, got {type(path).__name__} {path!r:.80}.")
    found = _registry.get(path)
    if found is not None:
        return found
    module_name = path.rpartition(".")[0]
    while module_name:
        # Only a dotted path of identifiers can be a module: "..x" or "a\x00b" import nothing.
        if all(part.isidentifier() for part in module_name.split(".")):
            try:
                importlib.import_module(module_name)
                break
            except ModuleNotFoundError as exc:
                if not _is_module_or_parent(exc.name, module_name):  # the module exists; an import in it failed
                    raise UnknownJob(f"Job {path!r}: importing {module_name!r} failed: {exc!r}.") from exc
            except Exception as exc:  # the module exists but is broken
                raise UnknownJob(f"Job {path!r}: importing {module_name!r} failed: {exc!r}.") from exc
        module_name = module_name.rpartition(".")[0]
    found = _registry.get(path)
    for resolve in _resolvers:
        if found is not None:
            break
        found = resolve(path)
    if found is None:
        raise UnknownJob(
            f"No job is registered as {path!r:.300}. Decorate the function with @pgqueue.job and make sure "
            "its module is importable (pgqueue_worker imports every installed app's jobs module)."
        )
    return found


def registered() -> dict[str, JobSpec]:
    """A copy of the registry."""
    return dict(_registry)


def _code(func: Any) -> Any:
    """What identifies a function across re-registration: its code object (the callable itself if it has none)."""
    return getattr(func, "__code__", func)


def _is_module_or_parent(missing: str | None, module_name: str) -> bool:
    return missing is not None and (module_name == missing or module_name.startswith(missing + "."))
