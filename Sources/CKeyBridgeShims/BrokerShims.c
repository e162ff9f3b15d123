#include "CKeyBridgeShims.h"

// MARK: Broker: libcurl's share interface is variadic, and the broker's libmicrohttpd daemon takes a
// socket it opened itself (Unix sockets) and needs the options of the graceful stop.
CURLSHcode CKeyBridgeShims_curl_share_setopt_long(CURLSH *share, CURLSHoption option, long value) { return curl_share_setopt(share, option, value); }
CURLSHcode CKeyBridgeShims_curl_share_setopt_lock_function(CURLSH *share, void (*callback)(CURL *, curl_lock_data, curl_lock_access, void *)) { return curl_share_setopt(share, CURLSHOPT_LOCKFUNC, callback); }
CURLSHcode CKeyBridgeShims_curl_share_setopt_unlock_function(CURLSH *share, void (*callback)(CURL *, curl_lock_data, void *)) { return curl_share_setopt(share, CURLSHOPT_UNLOCKFUNC, callback); }
CURLSHcode CKeyBridgeShims_curl_share_setopt_pointer(CURLSH *share, CURLSHoption option, void *value) { return curl_share_setopt(share, option, value); }
struct MHD_Daemon *CKeyBridgeShims_MHD_start_daemon_on_socket(unsigned int flags, MHD_AccessHandlerCallback handler, void *handler_cls, MHD_RequestCompletedCallback completed, void *completed_cls, void *(*uri_logger)(void *cls, const char *uri, struct MHD_Connection *connection), void *uri_logger_cls, int listen_socket, size_t memory_limit, unsigned int timeout_seconds) { return MHD_start_daemon(flags, 0, NULL, NULL, handler, handler_cls, MHD_OPTION_NOTIFY_COMPLETED, completed, completed_cls, MHD_OPTION_URI_LOG_CALLBACK, uri_logger, uri_logger_cls, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)listen_socket, MHD_OPTION_CONNECTION_MEMORY_LIMIT, memory_limit, MHD_OPTION_CONNECTION_TIMEOUT, timeout_seconds, MHD_OPTION_END); }
