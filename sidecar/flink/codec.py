"""How a Flink record becomes the model's inputs, and the model's outputs the records emitted.

A codec is any object with `encode(record) -> {input name: array}` and
`decode(record, outputs) -> list of output records` (a list: an AsyncFunction
emits zero or more records per input). It must pickle, since Flink ships the
function to its workers; lambdas are fine (PyFlink uses cloudpickle).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class Codec(Protocol):
    def encode(self, record: Any) -> Mapping[str, np.ndarray]: ...

    def decode(self, record: Any, outputs: Mapping[str, np.ndarray]) -> list[Any]: ...


@dataclass(frozen=True)
class NumpyCodec:
    """One input tensor from the record, one output tensor back.

    `select(record)` picks the array-like to send (default: the record itself),
    converted to `dtype`; `emit(record, output)` makes the record to emit from the
    input record and the output array (default: the output as a Python list).
    Records of the wrong shape or type are the sidecar's to refuse: its error
    names the input and what it expected.
    """

    input_name: str = "input"
    output_name: str = "output"
    dtype: str = "float32"
    select: Callable[[Any], Any] | None = None
    emit: Callable[[Any, np.ndarray], Any] | None = None

    def encode(self, record: Any) -> dict[str, np.ndarray]:
        value = record if self.select is None else self.select(record)
        return {self.input_name: np.asarray(value, dtype=self.dtype)}

    def decode(self, record: Any, outputs: Mapping[str, np.ndarray]) -> list[Any]:
        try:
            output = outputs[self.output_name]
        except KeyError:
            raise ValueError(f"the model has no output {self.output_name!r}; it gave {sorted(outputs)}") from None
        return [output.tolist() if self.emit is None else self.emit(record, output)]
