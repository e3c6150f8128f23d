"""cnnzoo: the landmark image-classification CNNs, faithful to their papers.

    >>> import cnnzoo
    >>> model = cnnzoo.create_model("alexnet_paper", num_classes=10)
    >>> cnnzoo.list_models("vgg*")
"""

from .registry import (
    Counterpart,
    ModelCard,
    Paper,
    UnknownModelError,
    UnknownOptionError,
    convert_state_dict,
    create_model,
    get_card,
    list_models,
    model_options,
)

__version__ = "0.1.0"

__all__ = [
    "Counterpart",
    "ModelCard",
    "Paper",
    "UnknownModelError",
    "UnknownOptionError",
    "__version__",
    "convert_state_dict",
    "create_model",
    "get_card",
    "list_models",
    "model_options",
]
