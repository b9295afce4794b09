// Declarations only: LLVMFuzzerRunDriver is defined by the libFuzzer runtime.
#include "FuzzDriver.h"
