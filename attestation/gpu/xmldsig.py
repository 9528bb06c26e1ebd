"""A small, strict verifier for the one XML-DSig profile NVIDIA RIMs use (enveloped signature).

Profile (W3C XML-DSig 1.1; NVIDIA SWID-tag RIMs): one `ds:Signature` child of the document
element; `SignedInfo` with C14N 1.1 (`xml-c14n11`) or C14N 1.0 canonicalization,
`ecdsa-sha384`, exactly one `Reference` with `URI=""`, transforms `enveloped-signature` then the
same C14N, digest SHA-384; `SignatureValue` = raw P-384 r ‖ s; `KeyInfo/X509Data` = the signing
chain, leaf first. Anything else is rejected: no other algorithms, no external references, no
XPath, no second signature (signature-wrapping attacks need such freedom).

Canonicalization is lxml's inclusive C14N (libxml2). C14N 1.1 differs from 1.0 only in how
`xml:id` / `xml:base` / `xml:space` attributes inherit; documents that use any `xml:` attribute
are rejected, so for accepted documents both give identical bytes.

Invariants: pure; the parser resolves no entities, loads no DTD and touches no network;
`verify_enveloped` returns the parsed tree that was digested, so the caller reads exactly the
signed content. Only `ProtocolError` / `VerificationError` escape.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from lxml import etree

from attestation.x509chain import parse_der_chain, public_key
from hushcc.errors import ProtocolError, VerificationError

DS = "http://www.w3.org/2000/09/xmldsig#"
XML_NS = "http://www.w3.org/XML/1998/namespace"
C14N_ALGS = frozenset(
    {"http://www.w3.org/2006/12/xml-c14n11", "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"}
)
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
ECDSA_SHA384 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384"
SHA384_DIGESTS = frozenset(
    {"http://www.w3.org/2001/04/xmldsig-more#sha384", "http://www.w3.org/2001/04/xmlenc#sha384"}
)
MAX_XML = 1 << 20


@dataclass(frozen=True, slots=True)
class SignedDocument:
    """A document whose enveloped signature verified, and the signing chain it carried."""

    root: Any  # lxml element of the verified document (signature removed)
    chain: tuple[x509.Certificate, ...]


def _ds(tag: str) -> str:
    return f"{{{DS}}}{tag}"


def parse_xml(data: bytes) -> Any:  # noqa: ANN401 - lxml is untyped
    """Parse XML strictly (no DTD, no entities, no network).

    Raises:
        ProtocolError: Too large, not well-formed, or declares a DTD.
    """
    if len(data) > MAX_XML:
        raise ProtocolError("xml document too large")
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    try:
        root = etree.fromstring(bytes(data), parser=parser)
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise ProtocolError("xml document is not well-formed") from exc
    tree = root.getroottree()
    if tree.docinfo.internalDTD is not None or tree.docinfo.doctype:
        raise ProtocolError("xml document declares a DTD")
    return root


def _c14n(node: Any) -> bytes:  # noqa: ANN401
    try:
        out: bytes = etree.tostring(node, method="c14n", exclusive=False, with_comments=False)
    except etree.LxmlError as exc:
        raise ProtocolError("xml document cannot be canonicalized") from exc
    return out


def _one(parent: Any, tag: str) -> Any:  # noqa: ANN401
    found = parent.findall(_ds(tag))
    if len(found) != 1:
        raise ProtocolError(f"xml signature: expected exactly one {tag}")
    return found[0]


def _algorithm(node: Any) -> str:  # noqa: ANN401
    return str(node.get("Algorithm", ""))


def verify_enveloped(data: bytes) -> SignedDocument:
    """Verify the enveloped XML-DSig of `data` with the key of its own leaf certificate.

    The caller must then verify the returned chain against a pinned root — this function only
    proves that the chain's leaf signed exactly this document.

    Args:
        data: The XML document.

    Returns:
        The verified document (without its Signature element) and the embedded chain.

    Raises:
        ProtocolError: The document or signature is malformed or outside the profile.
        VerificationError: Digest or signature does not match.
    """
    root = parse_xml(data)
    for el in root.iter():
        if not isinstance(el.tag, str) or any(k.startswith(f"{{{XML_NS}}}") for k in el.attrib):
            raise ProtocolError("xml signature: comments, PIs or xml: attributes not allowed")
    sigs = root.findall(f".//{_ds('Signature')}")
    if len(sigs) != 1 or sigs[0].getparent() is not root:
        raise ProtocolError("xml signature: expected one Signature child of the document")
    sig = sigs[0]
    signed_info = _one(sig, "SignedInfo")
    ref = _check_profile(signed_info)
    digest_value = _b64(_one(ref, "DigestValue").text)
    sig_value = _b64(_one(sig, "SignatureValue").text)
    certs = _one(_one(sig, "KeyInfo"), "X509Data").findall(_ds("X509Certificate"))
    try:
        chain = tuple(parse_der_chain([_b64(c.text) for c in certs]))
    except (ValueError, x509.InvalidVersion) as exc:
        raise ProtocolError("xml signature: embedded certificate does not parse") from exc
    if not chain:
        raise ProtocolError("xml signature: no signing certificate")

    # (1) Reference digest: SHA-384 of the canonical document minus the Signature element.
    stripped = copy.deepcopy(root)
    stripped.remove(stripped.find(_ds("Signature")))
    if not hmac.compare_digest(hashlib.sha384(_c14n(stripped)).digest(), digest_value):
        raise VerificationError("xml signature: document digest does not match")
    # (2) SignedInfo signature by the leaf certificate's P-384 key.
    key = public_key(chain[0])
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise VerificationError("xml signature: signing key is not P-384")
    if len(sig_value) != 96:
        raise ProtocolError("xml signature: signature value is not 96 bytes")
    der = encode_dss_signature(
        int.from_bytes(sig_value[:48], "big"), int.from_bytes(sig_value[48:], "big")
    )
    try:
        key.verify(der, _c14n(signed_info), ec.ECDSA(hashes.SHA384()))
    except InvalidSignature as exc:
        raise VerificationError("xml signature: SignedInfo signature does not verify") from exc
    return SignedDocument(root=stripped, chain=chain)


def _check_profile(signed_info: Any) -> Any:  # noqa: ANN401
    """Reject any SignedInfo outside the profile; return its one Reference."""
    if _algorithm(_one(signed_info, "CanonicalizationMethod")) not in C14N_ALGS:
        raise ProtocolError("xml signature: unsupported canonicalization")
    if _algorithm(_one(signed_info, "SignatureMethod")) != ECDSA_SHA384:
        raise ProtocolError("xml signature: signature method is not ecdsa-sha384")
    ref = _one(signed_info, "Reference")
    if ref.get("URI") != "":
        raise ProtocolError("xml signature: reference is not the whole document")
    transforms = [_algorithm(t) for t in _one(ref, "Transforms").findall(_ds("Transform"))]
    if len(transforms) != 2 or transforms[0] != ENVELOPED or transforms[1] not in C14N_ALGS:
        raise ProtocolError("xml signature: transforms are not enveloped-signature + c14n")
    if _algorithm(_one(ref, "DigestMethod")) not in SHA384_DIGESTS:
        raise ProtocolError("xml signature: digest is not sha384")
    return ref


def _b64(text: str | None) -> bytes:
    try:
        return base64.b64decode("".join((text or "").split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError("xml signature: bad base64") from exc
