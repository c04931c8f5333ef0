"""The competition's data format, books and folds, and dataset layouts."""
