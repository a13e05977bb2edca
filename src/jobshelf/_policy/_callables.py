"""Which callables a stored job may name: the ``allowed_callables=`` patterns, judged by what a
reference resolves to (:mod:`jobshelf._references`)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from typing import Any

from .._exceptions import DeserializationError, SerializationError
from .._references import GlobalGate, RefusedReference, brief, resolve_reference, split_reference

__all__ = ["CallablePolicy"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_GLOB_SEGMENT = re.compile(r"[A-Za-z0-9_*?\[\]!]+")
_MISSING = object()
_CACHE_SIZE = 1024


class _Patterns:
    """The spelling check: module names (and their submodules) and per-segment globs."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.modules: tuple[str, ...] = ()
        self.globs: tuple[tuple[list[str], list[str]], ...] = ()
        for pattern in patterns:
            if not isinstance(pattern, str) or not pattern:
                raise TypeError(f"allowed_callables holds {pattern!r}; give module names or 'module:name'")
            if ":" in pattern:
                module, _, qualname = pattern.partition(":")
                segments = module.split("."), qualname.split(".")
                if ":" in qualname or not all(map(_GLOB_SEGMENT.fullmatch, [*segments[0], *segments[1]])):
                    raise ValueError(
                        f"allowed_callables pattern {pattern!r}: expected 'module:name' with dotted "
                        "identifiers and * ? [] wildcards (a wildcard never matches a dot)"
                    )
                self.globs += (segments,)
            elif all(_NAME.fullmatch(part) for part in pattern.split(".")):
                self.modules += (pattern,)
            else:
                raise ValueError(
                    f"allowed_callables pattern {pattern!r}: a module name is dotted identifiers "
                    "(use 'module:name_*' for wildcards)"
                )

    def match(self, module: str, names: list[str]) -> bool:
        if any(module == allowed or module.startswith(f"{allowed}.") for allowed in self.modules):
            return True
        modules = module.split(".")
        return any(
            len(glob_modules) == len(modules)
            and len(glob_names) == len(names)
            and all(map(fnmatch.fnmatchcase, modules, glob_modules))
            and all(map(fnmatch.fnmatchcase, names, glob_names))
            for glob_modules, glob_names in self.globs
        )


class _PolicyGate(GlobalGate):
    def __init__(self, policy: CallablePolicy) -> None:
        super().__init__(
            lambda module, name: policy.allows(f"{module}:{name}"), by_value=policy.allow_by_value
        )
        self._policy = policy

    def resolve(self, module: str, name: str) -> Any:
        return self._policy.resolve(f"{module}:{name}")

    def module_allowed(self, module: str) -> bool:
        return self._policy.module_allowed(module)


class CallablePolicy:
    """Which callables a stored job may name: the ``allowed_callables=`` list.

    Each pattern is a module name (that module and its submodules: ``"myapp.jobs"``) or a
    ``"module:qualname"`` pattern whose shell-style wildcards match within one dotted segment
    (``"myapp.tasks:send_*"`` matches ``send_mail``, never ``send_mail.__globals__.get``). A
    reference matching a pattern is allowed only if it resolves, as described in this module, to a
    function or class defined exactly there.

    :param patterns: the allow-list; ``None`` allows every callable (the stock store's behaviour)
    :param allow_by_value: allow callables stored by value (cloudpickle's lambdas and closures):
        the restricted unpickler then also builds code objects and functions (it never calls them)
    """

    def __init__(self, patterns: Iterable[str] | None = None, *, allow_by_value: bool = False) -> None:
        if isinstance(patterns, (str, bytes)):
            raise TypeError(f"allowed_callables must be a list, got the string {patterns!r}")
        self.patterns = None if patterns is None else tuple(patterns)
        self.allow_by_value = bool(allow_by_value) or self.patterns is None
        self._spelling = _Patterns(self.patterns or ())
        self._resolved: dict[str, Any] = {}
        #: The restricted unpickler's question, as a :class:`GlobalGate` (a predicate too).
        self.allows_global: GlobalGate = _PolicyGate(self)

    @property
    def restricts(self) -> bool:
        """True when an allow-list is configured."""
        return self.patterns is not None

    def spelled_allowed(self, reference: str) -> bool:
        """True when the reference's spelling matches a pattern (nothing imported, nothing resolved)."""
        if self.patterns is None:
            return True
        try:
            module, names = split_reference(reference)
        except RefusedReference:
            return False
        return self._spelling.match(module, names)

    def module_allowed(self, module: str) -> bool:
        """True when ``module`` is covered by a module pattern, or by a glob's module part (so it
        may be imported to look a reference up)."""
        if self.patterns is None:
            return True
        if any(module == allowed or module.startswith(f"{allowed}.") for allowed in self._spelling.modules):
            return True
        modules = module.split(".")
        return any(
            len(glob_modules) == len(modules) and all(map(fnmatch.fnmatchcase, modules, glob_modules))
            for glob_modules, _ in self._spelling.globs
        )

    def resolve(self, reference: str) -> Any:
        """The function or class an allowed reference names.

        :raises RefusedReference: with the reason and what to do
        """
        found = self._resolved.get(reference, _MISSING)
        if found is not _MISSING:
            return found
        split_reference(reference)  # a malformed reference is refused for what it is
        if not self.spelled_allowed(reference):
            raise RefusedReference(
                f"{brief(reference)}, which allowed_callables does not allow ({list(self.patterns or ())}); "
                "add its module to allowed_callables if it is yours"
            )
        found = resolve_reference(reference, self.module_allowed)
        if len(self._resolved) >= _CACHE_SIZE:
            self._resolved.clear()
        self._resolved[reference] = found
        return found

    def refusal(self, reference: str) -> str | None:
        """Why ``reference`` is not allowed, or ``None`` when it is (imports only allowed modules)."""
        if self.patterns is None:
            return None
        try:
            self.resolve(reference)
        except RefusedReference as exc:
            return str(exc)
        return None

    def allows(self, reference: str) -> bool:
        """True when the ``"module:qualname"`` reference is allowed (see :meth:`resolve`)."""
        return self.refusal(reference) is None

    def check_state(self, state: dict[str, Any], job_id: Any) -> None:
        """Refuse a decoded state whose callable is not allowed (before APScheduler resolves it).

        :raises DeserializationError: naming the job and the reference
        """
        problem = self._problem(state["func"])
        if problem:
            raise DeserializationError(f"job {job_id!r} {problem}")

    def check_outgoing(self, state: dict[str, Any], job_id: Any) -> None:
        """Refuse to store a job whose callable is not allowed.

        :raises SerializationError: naming the job and the reference
        """
        problem = self._problem(state["func"])
        if problem:
            raise SerializationError(f"job {job_id!r} {problem}; nothing was written")

    def _problem(self, func: Any) -> str | None:
        if self.patterns is None:
            return None
        if isinstance(func, str):
            refusal = self.refusal(func)
            return None if refusal is None else f"calls {refusal}"
        if self.allow_by_value:
            return None
        return (
            f"carries its callable by value ({type(func).__name__}), which no allow-list can check "
            "before unpickling; pass allow_by_value=True to trust it"
        )

    def __repr__(self) -> str:
        return f"CallablePolicy({self.patterns!r}, allow_by_value={self.allow_by_value})"
