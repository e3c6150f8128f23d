"""Layer-by-layer analysis of any ``nn.Module``: parameters, MACs, shapes and receptive fields.

- :func:`summarize` (``cnnzoo summary``): a row per layer and the totals.
- :mod:`cnnzoo.analysis.arithmetic`: the convolution arithmetic of the notes as functions
  (output sizes, receptive-field recurrence, im2col/col2im, cost identities).
- :mod:`cnnzoo.analysis.output_field`: the receptive field at a dense (segmentation) network's output, by the
  layer arithmetic where it applies, else by the input gradient of the centre output pixel.
- :mod:`cnnzoo.analysis.plots`: where parameters and MACs sit, and how the receptive field grows.

Needs only torch (matplotlib for the plots).
"""

from .receptive import Field
from .summary import LayerRecord, Summary, summarize

__all__ = ["Field", "LayerRecord", "Summary", "summarize"]
