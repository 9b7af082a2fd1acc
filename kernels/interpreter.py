"""Running the Triton kernels on the CPU (TRITON_INTERPRET=1): a compatibility fix for the interpreter.

Triton 3.6's interpreter turns a scalar into a loop bound with `int(ndarray)`, which NumPy >= 2.4 refuses for
its 1-element arrays: every `range()` over a run-time bound then fails. `patch_triton_interpreter()` makes
such scalars index as their single element. Call it before running kernels in the interpreter; it is
idempotent and does nothing when the interpreter is off.
"""

from __future__ import annotations

import os

_PATCHED = False


def patch_triton_interpreter() -> None:
    global _PATCHED
    if _PATCHED or os.environ.get("TRITON_INTERPRET", "0") != "1":
        return
    import triton.runtime.interpreter as interpreter

    original = interpreter._patch_lang_tensor

    def patch_lang_tensor(tensor, scope) -> None:
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    interpreter._patch_lang_tensor = patch_lang_tensor
    _PATCHED = True
