#ifndef CKEYBRIDGE_SHIMS_H
#define CKEYBRIDGE_SHIMS_H

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <curl/curl.h>

// MARK: OpenSSL error raising is a macro around a variadic function.
void CKeyBridgeShims_ERR_raise_data(int lib, int reason, const char *text);

// MARK: OpenSSL SSL_CTX and SSL controls are macros over SSL_CTX_ctrl / SSL_ctrl.
long CKeyBridgeShims_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version);
long CKeyBridgeShims_SSL_CTX_set_max_proto_version(SSL_CTX *ctx, int version);
long CKeyBridgeShims_SSL_CTX_add1_chain_cert(SSL_CTX *ctx, X509 *cert);
long CKeyBridgeShims_SSL_get_signature_nid(SSL *ssl, int *nid);
long CKeyBridgeShims_SSL_CTX_set1_client_sigalgs_list(SSL_CTX *ctx, const char *list);
long CKeyBridgeShims_SSL_get_peer_signature_nid(SSL *ssl, int *nid);
int CKeyBridgeShims_SSL_CTX_get_ex_new_index(void);

// MARK: Composite flag macros that Swift does not import.
static const unsigned long CKeyBridgeShims_XN_FLAG_RFC2253 = XN_FLAG_RFC2253;

// MARK: libcurl's setopt and getinfo are variadic, which Swift cannot call.
CURLcode CKeyBridgeShims_curl_easy_setopt_long(CURL *curl, CURLoption option, long value);
CURLcode CKeyBridgeShims_curl_easy_setopt_pointer(CURL *curl, CURLoption option, void *value);
CURLcode CKeyBridgeShims_curl_easy_setopt_string(CURL *curl, CURLoption option, const char *value);
CURLcode CKeyBridgeShims_curl_easy_setopt_write_function(CURL *curl, size_t (*callback)(char *, size_t, size_t, void *));
CURLcode CKeyBridgeShims_curl_easy_setopt_header_function(CURL *curl, size_t (*callback)(char *, size_t, size_t, void *));
CURLcode CKeyBridgeShims_curl_easy_setopt_read_function(CURL *curl, size_t (*callback)(char *, size_t, size_t, void *));
CURLcode CKeyBridgeShims_curl_easy_setopt_ssl_ctx_function(CURL *curl, CURLcode (*callback)(CURL *, void *, void *));
CURLcode CKeyBridgeShims_curl_easy_setopt_debug_function(CURL *curl, int (*callback)(CURL *, curl_infotype, char *, size_t, void *));
CURLcode CKeyBridgeShims_curl_easy_getinfo_long(CURL *curl, CURLINFO info, long *value);
CURLcode CKeyBridgeShims_curl_easy_getinfo_string(CURL *curl, CURLINFO info, const char **value);

#endif
