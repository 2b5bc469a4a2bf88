"""S/MIME between operators (RFC 8551, the Direct model): CMS at DER level (cms.py), MIME wrapping
(mime.py), signer validation against the trust space (trust.py)."""
