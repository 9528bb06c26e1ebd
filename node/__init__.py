"""The sealed inference node: OHTTP gateway, key lifecycle, hardening, audit log, engine."""
