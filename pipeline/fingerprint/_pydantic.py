"""pydantic models: class and field values (as the model dumps them)."""

from __future__ import annotations

import pydantic

from .encoder import Encoder, type_name
from .values import encode


@encode.register(pydantic.BaseModel)
def _model(v: pydantic.BaseModel, enc: Encoder) -> None:
    enc.tag(b"pydantic")
    enc.text(type_name(type(v)))
    enc.value_at(".model_dump()", v.model_dump(mode="python"))
