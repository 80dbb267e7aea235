"""Checks of ``deid verify`` beyond the header byte search: values nobody reads (UN, private,
after the pixel data) and pixels (bits above High Bit; with ``--ocr``, text OCR still reads).

Importing this package registers them with :func:`deid.verify.register_check`.
"""

from deid.checks import pixels, values

__all__ = ["pixels", "values"]
