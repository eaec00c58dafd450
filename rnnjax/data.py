"""Sequences into arrays: padding to a length, buckets of similar lengths, forecasting windows."""

from rnnjax._src.data import ahead, bucket_batches, forecast_pairs, pad, windows

__all__ = ["ahead", "bucket_batches", "forecast_pairs", "pad", "windows"]
