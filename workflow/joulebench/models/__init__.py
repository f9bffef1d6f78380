"""Model sources (hub download at a pinned revision, local, synthetic shapes), the precision
registry and quantized variants.
"""
