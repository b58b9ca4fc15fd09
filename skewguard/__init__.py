"""skewguard: keep a model's serving world honest against its training world."""

from __future__ import annotations

__version__ = "0.1.0"
