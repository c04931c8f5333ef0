"""Data validation with Great Expectations: annotations, incoming batches, predictions."""
