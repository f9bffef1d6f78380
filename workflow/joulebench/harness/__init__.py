"""The offline benchmark: one configuration's run (prefill, decode, repetitions), its engines and
its memory check.
"""
