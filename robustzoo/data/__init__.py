"""Datasets: specs registered by plugins, loaded as uint8 tensors, served as (x, y, index)."""

from __future__ import annotations

from .core import AUGMENTS, DatasetSpec, Splits, TensorData, load_splits, load_test, select_examples

__all__ = ["AUGMENTS", "DatasetSpec", "Splits", "TensorData", "load_splits", "load_test", "select_examples"]
