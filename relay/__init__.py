"""The OHTTP relay service and the Privacy Pass token issuer."""
