"""Data: where the Parquet files are, checking them, decoding, augmenting, and the Ray Data pipeline."""


class DataError(ValueError):
    """Bad input data; the message names the spec field, the file and the row."""
