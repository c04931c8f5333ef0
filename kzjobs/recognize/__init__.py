"""Recognition: a bundle of models reads a collection and writes outputs to the store."""
