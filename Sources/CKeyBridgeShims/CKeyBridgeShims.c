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

// MARK: libmicrohttpd's daemon start and daemon info calls are variadic, which Swift cannot call.
struct MHD_Daemon *CKeyBridgeShims_MHD_start_daemon(unsigned int flags, uint16_t port, MHD_AccessHandlerCallback handler, void *handler_cls, MHD_RequestCompletedCallback completed, void *completed_cls, void *(*uri_logger)(void *cls, const char *uri, struct MHD_Connection *connection), void *uri_logger_cls, const struct sockaddr *address, size_t memory_limit, unsigned int timeout_seconds) { return MHD_start_daemon(flags, port, NULL, NULL, handler, handler_cls, MHD_OPTION_NOTIFY_COMPLETED, completed, completed_cls, MHD_OPTION_URI_LOG_CALLBACK, uri_logger, uri_logger_cls, MHD_OPTION_SOCK_ADDR, address, MHD_OPTION_CONNECTION_MEMORY_LIMIT, memory_limit, MHD_OPTION_CONNECTION_TIMEOUT, timeout_seconds, MHD_OPTION_END); }
uint16_t CKeyBridgeShims_MHD_get_daemon_info_bind_port(struct MHD_Daemon *daemon) { const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT); return info == NULL ? 0 : info->port; }
