"""Recognition: a bundle of models reads a collection and writes outputs to the store."""

# Pages read before level 2 decides for all of them in one call (on one page its fixed
# cost is two thirds of its time); a crash redoes at most this many.
PAGES_PER_BATCH = 8
