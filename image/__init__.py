"""The reproducible node image: build, manifest, expected measurements, auditor rebuild."""
