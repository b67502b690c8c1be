"""dataprep/traces: see the modules."""
