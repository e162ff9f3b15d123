// The ENGINE API is deprecated in OpenSSL 3; this file is the only place that calls it, so the
// deprecation is silenced here and nowhere else.
#define OPENSSL_SUPPRESS_DEPRECATED
#include "CKeyBridgeShims.h"
#include <openssl/engine.h>
#include <openssl/ui.h>

// MARK: The ENGINE API is deprecated in OpenSSL 3, but libp11's `pkcs11` engine and vendor HSM
// engines are still only reachable through it.
ENGINE *CKeyBridgeShims_ENGINE_by_id(const char *id) { return ENGINE_by_id(id); }
int CKeyBridgeShims_ENGINE_ctrl_cmd_string(ENGINE *engine, const char *command, const char *argument, int optional) { return ENGINE_ctrl_cmd_string(engine, command, argument, optional); }
int CKeyBridgeShims_ENGINE_init(ENGINE *engine) { return ENGINE_init(engine); }
int CKeyBridgeShims_ENGINE_set_flags_NO_REGISTER_ALL(ENGINE *engine) { return ENGINE_set_flags(engine, ENGINE_get_flags(engine) | ENGINE_FLAGS_NO_REGISTER_ALL); }
int CKeyBridgeShims_ENGINE_free(ENGINE *engine) { return ENGINE_free(engine); }
EVP_PKEY *CKeyBridgeShims_ENGINE_load_private_key(ENGINE *engine, const char *key_id, UI_METHOD *ui_method, void *callback_data) { return ENGINE_load_private_key(engine, key_id, ui_method, callback_data); }

// A reader that answers no prompt: 0 makes UI_process fail, so the engine never calls C_Login.
static int CKeyBridgeShims_refuse_prompt(UI *ui, UI_STRING *prompt) { (void)ui; (void)prompt; return 0; }
UI_METHOD *CKeyBridgeShims_UI_create_refusing_method(void) {
    UI_METHOD *method = UI_create_method("KeyBridge: no PIN prompt");
    if (method != NULL && UI_method_set_reader(method, CKeyBridgeShims_refuse_prompt) != 0) { UI_destroy_method(method); return NULL; }
    return method;
}
