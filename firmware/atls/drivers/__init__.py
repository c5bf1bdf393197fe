"""Thin I/O around the sans-I/O cores: each driver moves datagrams, nothing else."""
