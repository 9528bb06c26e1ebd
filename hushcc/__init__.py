"""hushcc's leaf package: what every component shares, importing nothing of the project.

`hushcc.errors` (the error hierarchy), `hushcc.files` (secret-file creation) and
`hushcc.cliparse` (the argument-parser helpers each component's command group uses). The
components are the sibling import packages named in DESIGN.md (`ohttp`, `attestation`,
`transparency_log`, `image`, `node`, `relay`, `client`); the application on top of them all (the
one `hushcc` command and the demo) is `app`.
"""

from __future__ import annotations

__version__ = "0.1.0"
