#ifndef GRADSCOPE_FUZZ_DRIVER_H
#define GRADSCOPE_FUZZ_DRIVER_H

#include <stddef.h>
#include <stdint.h>

/// libFuzzer's driver, exported by the runtime that -sanitize=fuzzer links in.
/// SwiftPM points an executable's `main` at the target's own entry function,
/// so the target calls this itself instead of relying on libFuzzer's `main`.
int LLVMFuzzerRunDriver(int *argc, char ***argv,
                        int (*callback)(const uint8_t *data, size_t size));

#endif
