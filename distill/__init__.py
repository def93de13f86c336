"""distill: distil a vision-language model's ranking taste into a CLIP-style image retriever.

The library knows nothing about Ray Jobs; `ray_jobs/*.py` are the thin entry points.
"""

__version__ = "0.1.0"
