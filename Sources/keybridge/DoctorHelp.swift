extension Help {
    static let doctor = """
    Usage: keybridge doctor --key URI [--cert FILE|pkcs11:URI] [--cacert FILE]
                            [--bank URL] [--json]
           keybridge doctor --token URI [--json]

    Checks a setup in order and prints each check as passed, warning, failed (with
    the fix) or skipped (when a check it depends on did not pass, or it was not
    asked for):
       1. the PKCS#11 module loads
       2. the token is present and initialised
       3. the PIN flags are safe (not locked, not on the final try, no change due)
       4. the login works (ONE attempt, never retried)
       5. the key is found, sensitive and never extractable
       6. the mechanisms allow TLS 1.2 and 1.3 (RSA without PSS: a warning, as TLS
          1.3 then goes through raw RSA or is impossible)
       7. the certificate is found (--cert, else the token's certificate with the
          key's CKA_ID)
       8. the certificate matches the key (test signature)
       9. the chain reaches a trusted root (--cacert)
      10. no certificate expires within 30 days
      11. the PSD2 QCStatements are present (QWAC)
      12. a real mTLS handshake with --bank succeeds
    With --token only checks 1 to 4 run: for a new token that holds no key yet.

    Options:
          --key URI          pkcs11: URI of the key to check (with module-path and
                             pin-source)
          --token URI        Check only the module, token and login (no key)
          --module PATH      The PKCS#11 module, when the URI has no module-path
          --cert CERT        The certificate chain: a PEM file (leaf first) or a
                             pkcs11: URI
          --cacert FILE      Trust only these CA certificates for the chain
                             (default: the system's)
          --bank URL         Also make an mTLS request (GET) to this https:// URL
          --expiry-days N    Warn about certificates expiring within N days
                             (default 30)
          --json             JSON for monitoring: verdict, exitStatus and every
                             check
      -h, --help             Show this help

    Exit status: 0 fit for use (every check that ran passed); 1 fit, with warnings
    (nothing failed); 3 not fit (at least one check failed); 2 usage.
    """
}
