"""dataprep/phantoms: see the modules."""
