#include "CFuzzerDriver.h"

static CFuzzerDriver_Callback fuzzCallback;

void CFuzzerDriver_setCallback(CFuzzerDriver_Callback callback) { fuzzCallback = callback; }

// The runtime's archive references this symbol even when LLVMFuzzerRunDriver is the entry
// point, so it must exist; it forwards to the Swift function set above.
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fuzzCallback ? fuzzCallback(data, size) : 0;
}
