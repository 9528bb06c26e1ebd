"""Oblivious HTTP (RFC 9458), chunked OHTTP (draft-08) and binary HTTP (RFC 9292).

Pure: no sockets, files, clocks or ambient randomness. Randomness is a parameter, so the RFC
vectors can be reproduced byte for byte.
"""
