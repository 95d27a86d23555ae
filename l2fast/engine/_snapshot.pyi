"""Type stubs for the compiled :mod:`l2fast.engine._snapshot`."""

LAYOUT_HASH: str

class StateCodec:
    loading: bool
    def __init__(self, data: bytes | None = None) -> None: ...
    def result(self) -> bytes: ...
