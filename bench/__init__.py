"""Benchmarks: each module runs on its own (`./dev bench NAME`) and prints its figures."""
