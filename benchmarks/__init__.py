"""Reference implementations that archzoo's benchmarks time archzoo against."""
