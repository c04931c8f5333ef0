"""The competition's data format, books and folds, dataset layouts, and collections of every
input kind a library has (page images, PDFs, multi-page TIFFs, IIIF manifests)."""
