"""Stage 1: a class-agnostic Faster R-CNN that finds every character box."""
