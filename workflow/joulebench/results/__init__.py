"""From records to conclusions: tables, derived metrics, statistics, figures, findings, audit,
compare and forecast.
"""
