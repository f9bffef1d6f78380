"""Serving experiments: a server's life, the load generator that sends requests, and one session's
measurement.
"""
