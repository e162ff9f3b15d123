#ifndef CKEYBRIDGE_SHIMS_H
#define CKEYBRIDGE_SHIMS_H

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <curl/curl.h>

// MARK: OpenSSL error raising is a macro around a variadic function.
void CKeyBridgeShims_ERR_raise_data(int lib, int reason, const char *file, int line, const char *function, const char *text);

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

// MARK: The ENGINE API is deprecated in OpenSSL 3, but libp11's `pkcs11` engine and vendor HSM
// engines are still only reachable through it. Every ENGINE call lives in EngineShims.c, built with
// OPENSSL_SUPPRESS_DEPRECATED, so neither C nor Swift sees a deprecation warning.
ENGINE *CKeyBridgeShims_ENGINE_by_id(const char *id);
int CKeyBridgeShims_ENGINE_ctrl_cmd_string(ENGINE *engine, const char *command, const char *argument, int optional);
int CKeyBridgeShims_ENGINE_init(ENGINE *engine);
// Keeps ENGINE_register_all_complete (which libcurl's global init runs) from making the engine the
// process-wide default for RSA and EC: only keys it loads should use it.
int CKeyBridgeShims_ENGINE_set_flags_NO_REGISTER_ALL(ENGINE *engine);
int CKeyBridgeShims_ENGINE_free(ENGINE *engine);
EVP_PKEY *CKeyBridgeShims_ENGINE_load_private_key(ENGINE *engine, const char *key_id, UI_METHOD *ui_method, void *callback_data);
// A UI method whose reader fails, so an engine without a PIN gives up instead of prompting or
// logging in with an empty PIN (which counts as a wrong one). Its callback needs <openssl/ui.h>,
// which the COpenSSL module does not export to Swift.
UI_METHOD *CKeyBridgeShims_UI_create_refusing_method(void);

// MARK: eIDAS QCStatements are walked as a generic SEQUENCE OF ANY; the typed STACK_OF(ASN1_TYPE)
// accessors are macros over OPENSSL_sk_*. pop_free frees every element with ASN1_TYPE_free.
int CKeyBridgeShims_sk_ASN1_TYPE_num(const STACK_OF(ASN1_TYPE) *stack);
ASN1_TYPE *CKeyBridgeShims_sk_ASN1_TYPE_value(const STACK_OF(ASN1_TYPE) *stack, int index);
void CKeyBridgeShims_sk_ASN1_TYPE_pop_free(STACK_OF(ASN1_TYPE) *stack);

// MARK: libmicrohttpd's daemon start and daemon info calls are variadic, which Swift cannot call.
// The mock bank's fixed option set: completion and raw-URI callbacks, bind address, memory and idle limits.
#include <sys/socket.h>
#include <microhttpd.h>
struct MHD_Daemon *CKeyBridgeShims_MHD_start_daemon(unsigned int flags, uint16_t port, MHD_AccessHandlerCallback handler, void *handler_cls, MHD_RequestCompletedCallback completed, void *completed_cls, void *(*uri_logger)(void *cls, const char *uri, struct MHD_Connection *connection), void *uri_logger_cls, const struct sockaddr *address, size_t memory_limit, unsigned int timeout_seconds);
uint16_t CKeyBridgeShims_MHD_get_daemon_info_bind_port(struct MHD_Daemon *daemon);

// MARK: Broker: libcurl's share interface is variadic, and the broker's libmicrohttpd daemon takes a
// socket it opened itself (Unix sockets) and needs the options of the graceful stop. See BrokerShims.c.
CURLSHcode CKeyBridgeShims_curl_share_setopt_long(CURLSH *share, CURLSHoption option, long value);
CURLSHcode CKeyBridgeShims_curl_share_setopt_lock_function(CURLSH *share, void (*callback)(CURL *, curl_lock_data, curl_lock_access, void *));
CURLSHcode CKeyBridgeShims_curl_share_setopt_unlock_function(CURLSH *share, void (*callback)(CURL *, curl_lock_data, void *));
CURLSHcode CKeyBridgeShims_curl_share_setopt_pointer(CURLSH *share, CURLSHoption option, void *value);
struct MHD_Daemon *CKeyBridgeShims_MHD_start_daemon_on_socket(unsigned int flags, MHD_AccessHandlerCallback handler, void *handler_cls, MHD_RequestCompletedCallback completed, void *completed_cls, void *(*uri_logger)(void *cls, const char *uri, struct MHD_Connection *connection), void *uri_logger_cls, int listen_socket, size_t memory_limit, unsigned int timeout_seconds);

#endif
