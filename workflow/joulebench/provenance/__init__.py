"""Where every result came from: host, packages, GPUs, SLURM and the hash of the code a step
runs.
"""
