"""Results: records into tables (analysis, derived, stats), figures, the findings report, the
provenance audit, comparisons between studies and cost forecasts."""
