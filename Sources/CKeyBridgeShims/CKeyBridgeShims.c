#include "CKeyBridgeShims.h"

// MARK: OpenSSL error raising is a macro around a variadic function.
void CKeyBridgeShims_ERR_raise_data(int lib, int reason, const char *file, int line, const char *function, const char *text) { ERR_new(); ERR_set_debug(file, line, function); ERR_set_error(lib, reason, "%s", text); }

// MARK: OpenSSL SSL_CTX and SSL controls are macros over SSL_CTX_ctrl / SSL_ctrl.
long CKeyBridgeShims_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version) { return SSL_CTX_set_min_proto_version(ctx, version); }
long CKeyBridgeShims_SSL_CTX_set_max_proto_version(SSL_CTX *ctx, int version) { return SSL_CTX_set_max_proto_version(ctx, version); }
long CKeyBridgeShims_SSL_CTX_add1_chain_cert(SSL_CTX *ctx, X509 *cert) { return SSL_CTX_add1_chain_cert(ctx, cert); }
long CKeyBridgeShims_SSL_get_signature_nid(SSL *ssl, int *nid) { return SSL_get_signature_nid(ssl, nid); }
long CKeyBridgeShims_SSL_CTX_set1_client_sigalgs_list(SSL_CTX *ctx, const char *list) { return SSL_CTX_set1_client_sigalgs_list(ctx, list); }
long CKeyBridgeShims_SSL_get_peer_signature_nid(SSL *ssl, int *nid) { return SSL_get_peer_signature_nid(ssl, nid); }
int CKeyBridgeShims_SSL_CTX_get_ex_new_index(void) { return SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL); }

// MARK: libcurl's setopt and getinfo are variadic, which Swift cannot call.
CURLcode CKeyBridgeShims_curl_easy_setopt_long(CURL *curl, CURLoption option, long value) { return curl_easy_setopt(curl, option, value); }
CURLcode CKeyBridgeShims_curl_easy_setopt_pointer(CURL *curl, CURLoption option, void *value) { return curl_easy_setopt(curl, option, value); }
CURLcode CKeyBridgeShims_curl_easy_setopt_string(CURL *curl, CURLoption option, const char *value) { return curl_easy_setopt(curl, option, value); }
CURLcode CKeyBridgeShims_curl_easy_setopt_write_function(CURL *curl, size_t (*callback)(char *, size_t, size_t, void *)) { return curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, callback); }
CURLcode CKeyBridgeShims_curl_easy_setopt_header_function(CURL *curl, size_t (*callback)(char *, size_t, size_t, void *)) { return curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, callback); }
CURLcode CKeyBridgeShims_curl_easy_setopt_read_function(CURL *curl, size_t (*callback)(char *, size_t, size_t, void *)) { return curl_easy_setopt(curl, CURLOPT_READFUNCTION, callback); }
CURLcode CKeyBridgeShims_curl_easy_setopt_ssl_ctx_function(CURL *curl, CURLcode (*callback)(CURL *, void *, void *)) { return curl_easy_setopt(curl, CURLOPT_SSL_CTX_FUNCTION, callback); }
CURLcode CKeyBridgeShims_curl_easy_setopt_debug_function(CURL *curl, int (*callback)(CURL *, curl_infotype, char *, size_t, void *)) { return curl_easy_setopt(curl, CURLOPT_DEBUGFUNCTION, callback); }
CURLcode CKeyBridgeShims_curl_easy_getinfo_long(CURL *curl, CURLINFO info, long *value) { return curl_easy_getinfo(curl, info, value); }
CURLcode CKeyBridgeShims_curl_easy_getinfo_string(CURL *curl, CURLINFO info, const char **value) { return curl_easy_getinfo(curl, info, value); }

// MARK: eIDAS QCStatements are walked as a generic SEQUENCE OF ANY; the typed STACK_OF(ASN1_TYPE)
// accessors are macros over OPENSSL_sk_*.
int CKeyBridgeShims_sk_ASN1_TYPE_num(const STACK_OF(ASN1_TYPE) *stack) { return sk_ASN1_TYPE_num(stack); }
ASN1_TYPE *CKeyBridgeShims_sk_ASN1_TYPE_value(const STACK_OF(ASN1_TYPE) *stack, int index) { return sk_ASN1_TYPE_value(stack, index); }
void CKeyBridgeShims_sk_ASN1_TYPE_pop_free(STACK_OF(ASN1_TYPE) *stack) { sk_ASN1_TYPE_pop_free(stack, ASN1_TYPE_free); }
