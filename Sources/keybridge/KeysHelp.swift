extension Help {
    static let keys = """
    Usage: keybridge keys <command> [options]

    Keys that never leave the token: make them, get them certified, keep the chain
    beside them.

    Commands:
      list          Every key and certificate object on a token, with URI, type,
                    size or curve, CKA_ID, label, flags, matching certificate and
                    usable mechanisms
      generate      Generate a key pair inside the token (always sensitive, never
                    extractable)
      csr           A PSD2-ready certificate signing request signed by a token key
      import-cert   Store an issued certificate chain on the token next to its key

    Run 'keybridge keys <command> --help' for each command's options.
    """

    static let keysList = """
    Usage: keybridge keys list --token URI [--module PATH] [--json]

    Lists every private key, public key, secret key and certificate object on one
    token. For each key: its pkcs11: URI, type and size or curve, CKA_ID, label,
    flags (sensitive, extractable, never extractable, always-authenticate), the
    certificate stored with the same CKA_ID (subject and expiry) and the signing
    mechanisms the token offers for it (the list 'keybridge doctor' judges). Logs
    in when the token needs it, to see private objects, so the URI needs a PIN
    (pin-source, or KEYBRIDGE_PIN); no secret attribute is ever read.

    Options:
          --token URI       The token (required; --token-uri is the same), e.g.
                            'pkcs11:token=keybridge?pin-source=file:/path/to/pin'
          --module PATH     The PKCS#11 module, when the URI has no module-path
          --json            JSON with stable keys (absent values are null), for
                            scripts
      -h, --help            Show this help

    Exit status: 0 success; 2 usage (no --token) or malformed URI; 3 module, token
    or PIN problem.
    """

    static let keysGenerate = """
    Usage: keybridge keys generate --type TYPE --label LABEL --id HEX --token URI
                                   [--module PATH]

    Generates a key pair inside the token and prints the new private key's pkcs11:
    URI on standard output. The private key is always CKA_TOKEN=true,
    CKA_PRIVATE=true, CKA_SENSITIVE=true and CKA_EXTRACTABLE=false and may only
    sign; the token's answer is read back and a key that came out otherwise is
    destroyed. Options that ask for anything else (--extractable, --exportable,
    --not-sensitive, --session, …) are refused. A label or id that is already on
    the token is refused too. Progress is shown when standard error is a terminal.

    Options:
          --type TYPE       rsa:2048, rsa:3072, rsa:4096, ec:P-256, ec:P-384,
                            ec:P-521 or ed25519
          --label LABEL     CKA_LABEL of both halves (the URI's object=)
          --id HEX          CKA_ID of both halves, hex (the URI's id=);
                            certificates are linked by it
          --token URI       The token, e.g.
                            'pkcs11:token=keybridge?pin-source=file:/path/to/pin'
                            (--token-uri is the same)
          --module PATH     The PKCS#11 module, when the URI has no module-path
      -h, --help            Show this help

    Exit status: 0 success; 2 usage (including a refused option); 3 module, token
    or PIN problem, an existing label or id, or the token refused to generate.
    """

    static let keysCSR = """
    Usage: keybridge keys csr --key URI --subject DN --eidas-role ROLES --nca ID
                              [--nca-name NAME] [--org-id ID] [--qwac|--qseal]
                              [-o FILE]

    Makes a PKCS#10 certificate signing request for a PSD2 QWAC or QSealC, signed
    by the token key (the key never leaves the token). The subject gets
    organizationIdentifier (2.5.4.97); the request asks for a QCStatements
    extension with QcCompliance (0.4.0.1862.1.1), QcType web (0.4.0.1862.1.6.3,
    --qwac, the default) or eseal (0.4.0.1862.1.6.2, --qseal), and the PSD2
    statement (0.4.0.19495.2) with the roles and the NCA (ETSI TS 119 495). The
    signature is verified before the request is written.

    Options:
          --key URI         pkcs11: URI of the token key
          --subject DN      /C=DE/O=Example TPP GmbH/CN=tpp.example or
                            CN=tpp.example,O=Example TPP GmbH,C=DE
          --eidas-role R    Comma-separated PSD2 roles: PSP_AS, PSP_PI, PSP_AI,
                            PSP_IC
          --nca ID          The national competent authority's id (nCAId), e.g.
                            DE-BAFIN
          --nca-name NAME   Its full name (nCAName); known for DE-BAFIN, required
                            for others
          --org-id ID       organizationIdentifier, e.g. PSDDE-BAFIN-123456
                            (unless in --subject)
          --qwac            Request a QWAC (QcType web; the default)
          --qseal           Request a QSealC (QcType eseal)
      -o, --output FILE     Write the PEM to FILE (atomically) instead of standard
                            output
      -h, --help            Show this help

    Exit status: 0 success; 2 usage (bad subject, role, NCA id or
    organizationIdentifier); 3 key, token or PIN problem, or the token could not
    sign; 26 FILE cannot be written.
    """

    static let keysImportCert = """
    Usage: keybridge keys import-cert --chain FILE --key URI [--label LABEL]
                                      [--replace]

    Stores an issued certificate chain on the token: the leaf (the first
    certificate in FILE) as a certificate object with the key's CKA_ID and label,
    each intermediate with its subject key identifier as CKA_ID and its common
    name as label. Self-signed roots and certificates already on the token are
    skipped. A leaf whose public key is not the key's is refused (compared, then
    proven by a test signature) and nothing is written. 'keybridge request --cert
    pkcs11:…' then finds the whole chain on the token.

    Options:
          --chain FILE      PEM file: the leaf first, then its intermediates
          --key URI         pkcs11: URI of the token key the leaf was issued for
          --label LABEL     Label for the leaf (default: the key's label)
          --replace         Replace a different certificate already stored with
                            the key's id (the new one is stored first, then the
                            old one removed)
      -h, --help            Show this help

    Exit status: 0 success; 2 usage or malformed URI; 3 key, token or PIN problem;
    4 the leaf does not belong to the key, the file holds no certificate, or
    another certificate has the key's id; 26 FILE cannot be read.
    """
}
