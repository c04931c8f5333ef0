"""Benchmarks: each part writes figures to bench/results/<part>.json; run.py records them."""
