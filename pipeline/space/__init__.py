"""Search spaces and the architecture specs drawn from them."""
from pipeline.space.spec import ArchSpec, SpecError
from pipeline.space.space import Limits, SearchSpace, available_spaces

__all__ = ["ArchSpec", "SpecError", "Limits", "SearchSpace", "available_spaces"]
