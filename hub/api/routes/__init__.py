"""One module per resource, each an ``APIRouter``."""

__all__: list[str] = []
