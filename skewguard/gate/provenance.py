"""Which tensors of a traced forward pass carry the batch's values, for the dependency checks.

The dependency checks differentiate the outputs w.r.t. the batch, but ids reach an ``nn.Embedding``
through steps with no gradient: a cast (``x[:, 3].long()``), ``round``, ``bucketize``. The embedding
hook of :mod:`skewguard.gate.checks` maps ids that *are* the batch (a view of it, or a function of it
position by position) back to examples; anything else it cannot place. A zero gradient along a path
nobody traced proves nothing, so the hook has to tell "ids made from the batch, but not placeable"
(a skip) from "ids that are not the batch's at all" (``torch.arange`` positions: nothing to trace).

:class:`BatchProvenance` is a ``TorchFunctionMode`` that follows the batch's *values* through every
torch call of one forward pass: an output carries them when one of its value arguments did
(``zeros_like(ids)`` and ``arange(T).expand_as(ids)`` read only the shape of ``ids``, so they do not).
It also remembers pointwise steps (casts, ``round``, ``floor``, ``clamp``, ``bucketize``, ``%``), so
that ids can be followed back to the float values they were made from (:meth:`differentiable_source`):
the hook then ties the embedding's output to those values with a straight-through term, whose value
is exactly zero and whose gradient is the identity, and autograd does the per-example bookkeeping of
any slicing on the way. Only pointwise steps are followed: a ``roll`` or a sort of the ids is exactly
what the checks look for, so it leaves the ids "carried but untraceable" and the check skips.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Final

import torch
from torch.overrides import TorchFunctionMode

#: Calls whose output is a function of their first argument position by position (same shape).
_POINTWISE: Final = frozenset(
    {
        "long",
        "int",
        "short",
        "char",
        "byte",
        "to",
        "type",
        "type_as",
        "detach",
        "clone",
        "contiguous",
        "round",
        "floor",
        "ceil",
        "trunc",
        "fix",
        "clamp",
        "clip",
        "clamp_min",
        "clamp_max",
        "abs",
        "neg",
        "remainder",
        "fmod",
        "floor_divide",
        "bucketize",
        "add",
        "sub",
        "mul",
        "div",
        "__add__",
        "__radd__",
        "__sub__",
        "__mul__",
        "__rmul__",
        "__mod__",
        "__floordiv__",
        "__truediv__",
        "__neg__",
        "__abs__",
    }
)
#: Calls that read only the shape / dtype / device of their first argument.
_METADATA_OF_FIRST: Final = frozenset(
    {
        "zeros_like",
        "ones_like",
        "empty_like",
        "full_like",
        "rand_like",
        "randn_like",
        "randint_like",
        "new_zeros",
        "new_ones",
        "new_empty",
        "new_full",
        "new_tensor",
    }
)
#: Calls that read only the shape / dtype of every argument after the first.
_METADATA_OF_REST: Final = frozenset({"expand_as", "view_as", "reshape_as", "type_as", "to"})
_IN_PLACE_DUNDERS: Final = frozenset(
    {"__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__", "__imod__"}
)


def _tensors(value: object) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _name(func: Callable[..., Any]) -> str:
    return str(getattr(func, "__name__", ""))


def _in_place(name: str) -> bool:
    return name in _IN_PLACE_DUNDERS or (name.endswith("_") and not name.startswith("__"))


class BatchProvenance(TorchFunctionMode):
    """Within ``with BatchProvenance(batch):``, which tensors carry ``batch``'s values, and from what.

    Tensors are remembered by identity (and kept alive until the mode is dropped, so an identity is
    never reused within one forward pass).
    """

    def __init__(self, batch: torch.Tensor) -> None:
        super().__init__()
        self._carriers: dict[int, torch.Tensor] = {id(batch): batch}
        # id(output) -> the one carried argument it is a pointwise function of.
        self._made_from: dict[int, torch.Tensor] = {}

    def carries(self, tensor: torch.Tensor) -> bool:
        """Whether ``tensor`` was computed from the batch's values (or written with them in place)."""
        return id(tensor) in self._carriers

    def differentiable_source(self, tensor: torch.Tensor) -> torch.Tensor | None:
        """The earliest float tensor requiring grad that ``tensor`` is a pointwise function of, if any.

        Earliest, not nearest: ``round`` and ``floor`` have a zero derivative, so the gradient must be
        handed to what they were applied to.
        """
        source: torch.Tensor | None = None
        current, seen = tensor, set()
        while id(current) not in seen:
            seen.add(id(current))
            if current.is_floating_point() and current.requires_grad:
                source = current
            step = self._made_from.get(id(current))
            if step is None:
                break
            current = step
        return source

    def _mark(self, tensor: torch.Tensor) -> None:
        self._carriers[id(tensor)] = tensor

    def _forget_origin(self, tensor: torch.Tensor) -> None:
        """An in-place write that is not pointwise: ``tensor`` (and what it views) is no longer traceable."""
        self._made_from.pop(id(tensor), None)
        base = tensor._base
        if base is not None:
            self._made_from.pop(id(base), None)

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        """Run ``func``; mark its outputs when a value argument carried the batch."""
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        name = _name(func)
        values = list(args)
        if name in _METADATA_OF_FIRST and values:
            values = values[1:]
        elif name in _METADATA_OF_REST and values:
            values = values[:1]
        carried = [t for t in _tensors([values, kwargs]) if self.carries(t)]
        written = args[0] if _in_place(name) and args and isinstance(args[0], torch.Tensor) else None
        if written is not None:
            pointwise_on_itself = name.rstrip("_") in _POINTWISE and all(t is written for t in carried)
            if not pointwise_on_itself:
                self._forget_origin(written)
        if not carried:
            return result
        for tensor in _tensors(result):
            self._mark(tensor)
        for tensor in _tensors(kwargs.get("out")):
            self._mark(tensor)
        if written is not None:
            self._mark(written)
        elif (
            name in _POINTWISE
            and len(carried) == 1
            and args
            and carried[0] is args[0]
            and isinstance(result, torch.Tensor)
            and result is not args[0]
            and result.shape == args[0].shape
        ):
            self._made_from[id(result)] = args[0]
        return result
