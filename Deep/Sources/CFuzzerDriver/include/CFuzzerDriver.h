#ifndef KEYBRIDGE_CFUZZERDRIVER_H
#define KEYBRIDGE_CFUZZERDRIVER_H
#include <stddef.h>
#include <stdint.h>

typedef int (*CFuzzerDriver_Callback)(const uint8_t *data, size_t size);

// libFuzzer's documented entry point for programs that have their own main (SwiftPM gives
// every executable one). Defined by the runtime that -sanitize=fuzzer links in.
int LLVMFuzzerRunDriver(int *argc, char ***argv, CFuzzerDriver_Callback callback);

// The Swift fuzz function, for LLVMFuzzerTestOneInput to forward to.
void CFuzzerDriver_setCallback(CFuzzerDriver_Callback callback);

#endif
