"""Release: the bundle, the MLflow registry and its pyfunc, evaluation, promotion."""
