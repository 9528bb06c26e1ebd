"""Intel's public trust anchor for DCAP quotes, pinned as package data (no code).

* `sgx_root_ca.pem`: "Intel SGX Root CA", the root of PCK, TCB-signing and CRL chains
  (same bytes as google/go-tdx-guest `verify/trusted_root.pem`).
"""
